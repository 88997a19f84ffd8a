package main

// option is one getopt-style option as dog declares it: a short letter, the
// long name (also the urfave/cli flag name), whether it takes a value, and
// dog's help text (shown by "collie <command> <subcommand> -h").
type option struct {
	short  byte
	long   string
	hasArg bool
	help   string
}

// globalOptions are accepted by every subcommand whose option string lists
// them (dog's dog_options).
var globalOptions = []option{
	{'a', "address", true, "specify the daemon address (default: localhost)"},
	{'p', "port", true, "specify the daemon port"},
	{'r', "raw", false, "raw output mode: omit headers, separate fields with\n" +
		"                          single spaces and print all sizes in decimal bytes"},
	{'v', "verbose", false, "print more information than default"},
	{'h', "help", false, "display this help and exit"},
	{'T', "time", false, "show elapsed time"},
}

var vdiOptions = []option{
	{'P', "prealloc", false, "preallocate all the data objects"},
	{'n', "no-share", false, "share nothing with its parent"},
	{'i', "index", true, "specify the index of data objects"},
	{'s', "snapshot", true, "specify a snapshot id or tag name"},
	{'x', "exclusive", false, "write in an exclusive mode"},
	{'d', "delete", false, "delete a key"},
	{'w', "writeback", false, "use writeback mode"},
	{'c', "copies", true, "specify the data redundancy level"},
	{'F', "from", true, "create a differential backup from the snapshot"},
	{'f', "force", false, "do operation forcibly"},
	{'y', "hyper", false, "create a hyper volume"},
	{'o', "oid", true, "specify the object id of the tracking object"},
	{'e', "exist", false, "only check objects exist or not,\n" +
		"                          neither comparing nor repairing"},
	{'z', "block_size_shift", true, "specify the bit shift num for data object size"},
	{'R', "reduce-identical-snapshots", false, "do not create snapshot if " +
		"working VDI doesn't have its own objects"},
	{'B', "nr-batched-reclamation", true, "specify a number of batched" +
		"reclamation during VDI deletion"},
	{'I', "reclamation-interval", true, "specify how long (unit: second)" +
		"in reclamation loop during VDI deletion"},
	{'m', "max-reclaim", true, "specify the maximum number of reclaimed objects " +
		"(if this option is specified, an inode object won't be reclaimed)"},
}

var nodeOptions = []option{
	{'P', "progress", false, "show progress of recovery in the node"},
	{'l', "local", false, "issue request to local node"},
	{'w', "watch", false, "watch the stat every second"},
	{'A', "all", false, "show md information of all the nodes"},
	{'f', "force", false, "ignore the confirmation"},
}

var clusterOptions = []option{
	{'b', "store", true, "specify backend store"},
	{'c', "copies", true, "specify the default data redundancy (number of copies)"},
	{'f', "force", false, "do not prompt for confirmation"},
	{'F', "avoid-diskfull", false, "skip recovery if recovery process can cause disk full"},
	{'l', "lock", false, "Lock vdi to exclude multiple users"},
	{'R', "recyclevid", false, "enable recycling of VID"},
	{'t', "strict", false, "do not serve write request if number of nodes is not sufficient"},
	{'z', "block_size_shift", true, "specify the shift num of default data object size"},
	{'V', "fixedvnodes", false, "disable automatic vnodes calculation"},
	{'m', "multithread", false, "use multi-thread for 'cluster snapshot save'"},
	{'d', "diff", false, "just output the changes between the two adjacent epoches" +
		"for cluster info"},
}

// subcommand is one "collie <command> <subcommand>". opts lists the
// accepted short options in dog's order (it is also the order of the usage
// line); args is the usage text of the positional arguments.
type subcommand struct {
	name      string
	args      string
	opts      string
	desc      string
	needArg   bool // at least one positional argument
	needNodes bool // fetch the node list (GET_NODE_LIST, STAT_CLUSTER) first
	run       func(s *session, args []string) error
}

// command is a group of subcommands with its own options.
type command struct {
	name    string
	options []option
	subs    []subcommand
}

// commands is the command table, in dog's order.
var commands = []*command{
	{name: "vdi", options: vdiOptions, subs: []subcommand{
		{"check", "<vdiname>", "seaphT", "check and repair image's consistency", true, true, vdiCheck},
		{"create", "<vdiname> <size>", "PycaphrvzT", "create an image", true, true, vdiCreate},
		{"snapshot", "<vdiname>", "saphrvTR", "create a snapshot", true, false, vdiSnapshot},
		{"clone", "<src vdi> <dst vdi>", "sPnaphrvT", "clone an image", true, false, vdiClone},
		{"delete", "<vdiname>", "saphTBIm", "delete an image", true, false, vdiDelete},
		{"rollback", "<vdiname>", "saphfrvTBI", "rollback to a snapshot", true, false, vdiRollback},
		{"list", "[vdiname]", "aprhoT", "list images", false, false, vdiList},
		{"tree", "", "aphT", "show images in tree view format", false, false, vdiTree},
		{"graph", "", "aphT", "show images in Graphviz dot format", false, false, vdiGraph},
		{"object", "<vdiname>", "isaphT", "show object information in the image", true, false, vdiObject},
		{"setattr", "<vdiname> <key> [value]", "dxaphT", "set a VDI attribute", true, false, vdiSetattr},
		{"getattr", "<vdiname> <key>", "aphT", "get a VDI attribute", true, false, vdiGetattr},
		{"resize", "<vdiname> <new size>", "aphT", "resize an image", true, false, vdiResize},
		{"read", "<vdiname> [<offset> [<len>]]", "saphT", "read data from an image", true, false, vdiRead},
		{"write", "<vdiname> [<offset> [<len>]]", "apwhT", "write data to an image", true, false, vdiWrite},
		{"backup", "<vdiname>", "sFaphT", "create an incremental backup between two snapshots and outputs to STDOUT", true, true, vdiBackup},
		{"restore", "<vdiname>", "saphTBI", "restore snapshot images from a backup provided in STDIN", true, true, vdiRestore},
		{"alter-copy", "<vdiname>", "caphTf", "set the vdi's redundancy level", true, true, vdiAlterCopy},
		{"lock", "", "saprhT", "See 'dog vdi lock' for more information", true, false, vdiLock},
		{"cache", "<vdiname>", "saphT", "Run 'dog vdi cache' for more information", true, false, vdiCache},
	}},
	{name: "node", options: nodeOptions, subs: []subcommand{
		{"list", "", "aprhvT", "list nodes", false, true, nodeList},
		{"info", "", "aprhT", "show information about each node", false, true, nodeInfo},
		{"recovery", "<max> <interval>", "aphPrT", "show recovery information or set/get recovery speed throttling of nodes", false, true, nodeRecoveryCmd},
		{"kill", "<node id>", "aprhlT", "kill node", false, true, nodeKill},
		{"stat", "", "aprwhT", "show stat information about the node", false, false, nodeStat},
		{"log", "", "aphT", "show or set log level of the node", true, false, nodeLog},
		{"vnodes", "<num of vnodes>", "aph", "set new vnodes", true, false, nodeVnodes},
		{"md", "[disks]", "aprAfhT", "See 'dog node md' for more information", true, false, nodeMd},
	}},
	{name: "cluster", options: clusterOptions, subs: []subcommand{
		{"info", "", "aprhvTd", "show cluster information", false, true, clusterInfo},
		{"format", "", "bcltaphzTVRfF", "create a Sheepdog store", false, true, clusterFormat},
		{"shutdown", "", "aphT", "stop Sheepdog", false, false, clusterShutdown},
		{"recover", "", "afphT", "See 'dog cluster recover' for more information", true, false, clusterRecover},
		{"reweight", "", "aphT", "reweight the cluster", false, false, clusterReweight},
		{"check", "", "aphT", "check and repair cluster", false, true, clusterCheck},
		{"snapshot", "<tag|idx> <path> [vdi1] [vdi2] ...", "aphTm", "snapshot/restore the cluster", true, true, clusterSnapshot},
		{"alter-copy", "", "aphTcf", "set the cluster's redundancy level", false, true, clusterAlterCopy},
	}},
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (c *command) find(name string) *subcommand {
	for i := range c.subs {
		if c.subs[i].name == name {
			return &c.subs[i]
		}
	}
	return nil
}

// option returns the definition of short option ch for this command.
func (c *command) option(ch byte) (option, bool) {
	for _, o := range globalOptions {
		if o.short == ch {
			return o, true
		}
	}
	for _, o := range c.options {
		if o.short == ch {
			return o, true
		}
	}
	return option{}, false
}

// allowed lists the options sub accepts, in the order of its option string.
func (c *command) allowed(sub *subcommand) []option {
	var opts []option
	for i := 0; i < len(sub.opts); i++ {
		if o, ok := c.option(sub.opts[i]); ok {
			opts = append(opts, o)
		}
	}
	return opts
}
