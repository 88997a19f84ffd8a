package store

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// SetNodeSpace keeps space as the store's NodeSpace (a reweight, which
// weighs the store again: Sheepdog's set_node_space), so that a restarted
// sheep announces it too.
func (s *Store) SetNodeSpace(space uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], space)
	if err := unix.Setxattr(s.dir, spaceAttr, b[:], 0); err != nil {
		return fmt.Errorf("store: keep the space of %s: %w: %w", s.dir, proto.ResEIO, err)
	}
	return nil
}
