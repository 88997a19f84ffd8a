package main

import (
	"fmt"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

const alterClusterCopyCaution = "    __\n" +
	"   ()'`;\n" +
	"   /\\|`  Caution! Changing cluster's redundancy level will affect\n" +
	"  /  |   every replicated VDI and trigger recovery.\n" +
	"(/_)_|_  Are you sure you want to continue? [yes/no]: "

const alterVdiCopyCaution = "    __\n" +
	"   ()'`;\n" +
	"   /\\|`  Caution! Changing VDI's redundancy level will affect\n" +
	"  /  |   the VDI itself only and trigger recovery.\n" +
	"(/_)_|_  Are you sure you want to continue? [yes/no]: "

// alterCopies is the -c of alter-copy, as dog takes it: erasure codes
// refused, the default copies when none is given (what names the level:
// "cluster's" or "vdi's"). ok is false when the user declined.
func (s *session) alterCopies(what string) (copies uint8, ok bool, err error) {
	o := &s.opts
	if o.copyPolicy != 0 {
		return 0, false, failf(exitUsage, "Changing redundancy level of erasure coded vdi is not supported yet.")
	}
	copies = o.copies
	if !o.copiesSet || copies == 0 {
		copies = proto.DefaultCopies
		fmt.Fprintf(s.out, "The %s redundancy level is not specified, use %d as default.\n", what, copies)
	}
	if !o.force && int(copies) > len(s.nodes) {
		if !s.confirm(fmt.Sprintf("Number of copies (%d) is larger than number of nodes (%d).\n"+
			"Are you sure you want to continue? [yes/no]: ", copies, len(s.nodes))) {
			return 0, false, nil
		}
	}
	return copies, true, nil
}

// clusterAlterCopy is dog cluster alter-copy -c N: the cluster's default
// and every replicated VDI get N copies; recovery moves the objects.
func clusterAlterCopy(s *session, _ []string) error {
	copies, ok, err := s.alterCopies("cluster's")
	if err != nil || !ok {
		return err
	}
	req := proto.NewRequest(proto.OpGetClusterDefault)
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		return err
	}
	def := rsp.ClusterDefault()
	if def.CopyPolicy != 0 {
		return failf(exitFailure, "The cluster's copy policy is erasure code, changing it is not supported yet.")
	}
	if def.NrCopies == copies {
		return failf(exitFailure, "The cluster's redundancy level is already set to %d, nothing changed.", copies)
	}
	if !s.opts.force && !s.confirm(alterClusterCopyCaution) {
		return nil
	}
	req = proto.NewRequest(proto.OpAlterClusterCopy)
	req.SetCluster(proto.ClusterArgs{Copies: copies})
	if rsp, _, err = s.do(&req, nil, nil); err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Changing the cluster's redundancy level failure: %s", rsp.Result)
	}
	fmt.Fprintf(s.out, "The cluster's redundancy level is set to %d, the old one was %d.\n", copies, def.NrCopies)
	return nil
}

// vdiAlterCopy is dog vdi alter-copy -c N VDI: only a standalone VDI (no
// parent, no children: its objects are its own); dog's order: the inode
// says N first, then the cluster state.
func vdiAlterCopy(s *session, args []string) error {
	name := args[0]
	copies, ok, err := s.alterCopies("vdi's")
	if err != nil || !ok {
		return err
	}
	vid, res, err := s.findVdi(name, 0, "")
	if err != nil {
		return err
	}
	if res != proto.ResSuccess {
		return failf(exitFailure, "Reading %s's vdi object failure.", name)
	}
	ino, err := s.readInode(vid, false)
	if err != nil {
		return failf(exitFailure, "Reading %s's vdi object failure.", name)
	}
	if ino.CopyPolicy != 0 {
		return failf(exitFailure, "%s's copy policy is erasure code, changing it is not supported yet.", name)
	}
	old := ino.NrCopies
	if old == copies {
		return failf(exitFailure, "%s's redundancy level is already set to %d, nothing changed.", name, old)
	}
	standalone := ino.ParentVdiID == 0
	if standalone {
		all, err := s.scanVdis(false, "", 0)
		if err != nil {
			return err
		}
		for _, r := range all {
			if r.ino != nil && r.ino.ParentVdiID == vid {
				standalone = false
			}
		}
	}
	if !standalone {
		return failf(exitFailure, "Only standalone vdi supports changing redundancy level.\nPlease clone %s with -n (--no-share) option first.", name)
	}
	if !s.opts.force && !s.confirm(alterVdiCopyCaution) {
		return nil
	}
	if err := s.writeObj(proto.VidToVdiOid(vid), []byte{copies}, proto.InodeNrCopiesOffset, old, 0, false, true); err != nil {
		return failf(exitFailure, "Overwrite the vdi object's header of %s failure while setting its redundancy level.", name)
	}
	req := proto.NewRequest(proto.OpAlterVdiCopy)
	req.SetVdiState(proto.VdiStateArgs{NewVid: vid, Copies: copies, BlockSizeShift: ino.BlockSizeShift})
	rsp, _, err := s.do(&req, nil, nil)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitFailure, "Changing %s's redundancy level failure.", name)
	}
	fmt.Fprintf(s.out, "%s's redundancy level is set to %d, the old one was %d.\n", name, copies, old)
	return nil
}
