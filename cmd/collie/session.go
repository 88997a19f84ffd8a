package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/erasure"
	"github.com/sheepdog-go/sheepdog/core/proto"
)

// session is one collie invocation: the parsed options, the connection to
// the sheep named by -a/-p, and what update_node_list learned.
type session struct {
	ctx   context.Context
	opts  cmdOptions
	args  []string
	stdin io.Reader
	// stdinLines reads confirmation answers; created on first use so
	// that vdi write gets stdin unbuffered.
	stdinLines *bufio.Reader
	out        *bufio.Writer
	stderr     io.Writer
	stdoutTTY  bool // stdout is a terminal: vdi tree highlights

	host string // -a as given (default 127.0.0.1)
	port int

	c     *client.Client
	nodes []proto.Node // sorted like sheep's node tree: addr, then port
	epoch uint32       // the epoch STAT_CLUSTER reported
	zones int          // distinct zones among nodes
}

// cmdOptions holds every option value, decoded and checked the way dog's
// option parsers do it.
type cmdOptions struct {
	raw, verbose, elapsed bool

	// vdi
	prealloc, noShare, writeback, reduceIdentical bool
	snapID                                        uint32
	snapTag                                       string
	copies, copyPolicy, blockSizeShift            uint8
	copiesSet                                     bool
	oid                                           uint64
	batch, interval, maxReclaim                   int
	snap                                          snapOptions // vdiopts.go

	// cluster
	store                                             string
	force, avoidDiskfull, useLock, recycleVid, strict bool
	fixedVnodes, diff                                 bool

	// node
	progress, local, watch bool
	all                    bool // -A: md info of every node
}

// newSession decodes the options of c. Option errors end the command the
// way dog's getopt loop does.
func newSession(c *cli.Context, stdin io.Reader, out *bufio.Writer, stderr io.Writer) (*session, error) {
	s := &session{ctx: context.Background(), args: c.Args().Slice(), stdin: stdin, out: out, stderr: stderr,
		host: "127.0.0.1", port: 7000}
	if env := os.Getenv("SHEEPDOG_DOG_ADDR"); env != "" {
		if _, err := resolveHost(env); err != nil {
			return nil, failf(exitFailure, "Invalid ip address %s", env)
		}
	}
	if env := os.Getenv("SHEEPDOG_DOG_PORT"); env != "" {
		if _, err := parsePort(env); err != nil {
			return nil, failf(exitUsage, "Invalid port number '%s'", env)
		}
	}
	if v := c.String("address"); v != "" {
		if _, err := resolveHost(v); err != nil {
			return nil, failf(exitFailure, "Invalid ip address %s", v)
		}
		s.host = v
	}
	if v := c.String("port"); v != "" {
		p, err := parsePort(v)
		if err != nil {
			return nil, failf(exitUsage, "Invalid port number '%s'", v)
		}
		s.port = p
	}
	o := &s.opts
	o.raw, o.verbose, o.elapsed = c.Bool("raw"), c.Bool("verbose"), c.Bool("time")
	o.prealloc, o.noShare, o.writeback = c.Bool("prealloc"), c.Bool("no-share"), c.Bool("writeback")
	o.reduceIdentical = c.Bool("reduce-identical-snapshots")
	o.force, o.avoidDiskfull, o.useLock = c.Bool("force"), c.Bool("avoid-diskfull"), c.Bool("lock")
	o.recycleVid, o.strict, o.fixedVnodes, o.diff = c.Bool("recyclevid"), c.Bool("strict"), c.Bool("fixedvnodes"), c.Bool("diff")
	o.store = c.String("store")
	o.progress, o.local, o.watch = c.Bool("progress"), c.Bool("local"), c.Bool("watch")
	o.all = c.Bool("all")
	if c.IsSet("snapshot") {
		v := c.String("snapshot")
		if id, err := strconv.ParseInt(strings.TrimLeft(v, " \t"), 10, 64); err == nil {
			if id <= 0 || id > 0xffffffff {
				return nil, failf(exitFailure, "The snapshot id must be larger than zero")
			}
			o.snapID = uint32(id)
		} else {
			o.snapTag = v
		}
	}
	if c.IsSet("copies") {
		n, policy, ok := parseCopies(c.String("copies"))
		if !ok {
			return nil, failf(exitFailure, "%s", erasure.InvalidCopies(c.String("copies")))
		}
		o.copies, o.copyPolicy, o.copiesSet = n, policy, true
	}
	if c.IsSet("block_size_shift") {
		n, _ := strconv.Atoi(strings.TrimSpace(c.String("block_size_shift")))
		switch shift := uint8(n); {
		case shift > proto.MaxBlockSizeShift:
			return nil, failf(exitFailure, "Object Size is limited to 2^31. Please set shift bit lower than 31")
		case shift < proto.MinBlockSizeShift:
			return nil, failf(exitFailure, "Object Size is larger than 2^20. Please set shift bit larger than 20")
		default:
			o.blockSizeShift = shift
		}
	}
	if err := parseSnapOptions(c, &o.snap); err != nil {
		return nil, err
	}
	if c.IsSet("oid") {
		v, err := strconv.ParseUint(strings.TrimPrefix(c.String("oid"), "0x"), 16, 64)
		if err != nil {
			return nil, failf(exitFailure, "object id must be a hex integer")
		}
		o.oid = v
	}
	for _, f := range []struct {
		name string
		dst  *int
		what string
	}{
		{"nr-batched-reclamation", &o.batch, "The number of batched reclamation"},
		{"reclamation-interval", &o.interval, "The interval of batched reclamation"},
		{"max-reclaim", &o.maxReclaim, "The maximum number of reclamation"},
	} {
		if !c.IsSet(f.name) {
			continue
		}
		n, err := strconv.Atoi(c.String(f.name))
		if err != nil {
			return nil, failf(exitFailure, "%s is invalid: %s", f.what, c.String(f.name))
		}
		if n <= 0 {
			return nil, failf(exitFailure, "%s must be positive integer", f.what)
		}
		*f.dst = n
	}
	return s, nil
}

// parsePort accepts a decimal port 1..65535.
func parsePort(v string) (int, error) {
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return 0, errors.New("invalid port")
	}
	return p, nil
}

func resolveHost(h string) (string, error) {
	if ip := net.ParseIP(h); ip != nil {
		return h, nil
	}
	addrs, err := net.LookupHost(h)
	if err != nil || len(addrs) == 0 {
		return "", errors.New("unknown host")
	}
	return addrs[0], nil
}

// parseCopies is dog's parse_copy (erasure.ParseCopies): "n" replicated
// copies (n <= 31) or "d:p" erasure coding with d in {2,4,8,16} and p in
// 1..15. It returns the number of copies (d+p for EC) and the copy policy.
func parseCopies(v string) (copies, policy uint8, ok bool) {
	c, p, ok := erasure.ParseCopies(v)
	return c, uint8(p), ok
}

// isNumeric reports whether v is a non-empty string of decimal digits.
func isNumeric(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// addr is the sheep's "host:port" for dialling.
func (s *session) addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// dial connects to a sheep; a failure is a system failure reported like
// dog's connect_to.
func (s *session) dial(addr string) (*client.Client, error) {
	c, err := client.Dial(s.ctx, addr)
	if err != nil {
		return nil, failf(exitSysfail, "failed to connect to %s: %s", displayAddr(addr), errnoText(err))
	}
	return c, nil
}

// displayAddr prints host:port without IPv6 brackets, as dog does.
func displayAddr(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h + ":" + p
}

// errnoText is the strerror text (%m) of the errno under err, or err itself.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return capitalize(errno.Error())
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return "Connection timed out"
	}
	return err.Error()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

// client returns the connection to the sheep named by -a/-p, dialling it on
// first use.
func (s *session) client() (*client.Client, error) {
	if s.c == nil {
		c, err := s.dial(s.addr())
		if err != nil {
			return nil, err
		}
		s.c = c
	}
	return s.c, nil
}

func (s *session) close() {
	if s.c != nil {
		s.c.Close()
	}
}

// do sends one request to the sheep and returns its reply. Only transport
// failures are errors (exit 2); the result code is the caller's business.
func (s *session) do(req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	c, err := s.client()
	if err != nil {
		return proto.Response{}, 0, err
	}
	return doOn(s.ctx, c, req, wdata, rbuf)
}

func doOn(ctx context.Context, c *client.Client, req *proto.Request, wdata, rbuf []byte) (proto.Response, int, error) {
	rsp, n, err := c.Do(ctx, req, wdata, rbuf)
	if err != nil {
		return rsp, n, failf(exitSysfail, "failed to communicate with %s: %v", displayAddr(c.Addr()), err)
	}
	return rsp, n, nil
}

// objects is the object layer over the session's connection.
func (s *session) objects() (client.Objects, error) {
	c, err := s.client()
	if err != nil {
		return client.Objects{}, err
	}
	return client.Objects{C: c}, nil
}

// updateNodeList is dog's update_node_list: GET_NODE_LIST, then a
// one-record STAT_CLUSTER whose reply epoch becomes the session's epoch.
func (s *session) updateNodeList() error {
	req := proto.NewRequest(proto.OpGetNodeList)
	buf := make([]byte, proto.MaxNodes*proto.NodeSize)
	rsp, n, err := s.do(&req, nil, buf)
	if err != nil {
		return err
	}
	if rsp.Result != proto.ResSuccess {
		return failf(exitSysfail, "Failed to update node list: %s", rsp.Result)
	}
	nodes, err := proto.UnmarshalNodes(buf[:n], n/proto.NodeSize)
	if err != nil {
		return failf(exitSysfail, "Failed to get node list: %v", err)
	}
	if len(nodes) == 0 {
		return failf(exitFailure, "There are no active sheep daemons")
	}
	slices.SortFunc(nodes, func(a, b proto.Node) int { return a.NodeID.Compare(b.NodeID) })
	s.nodes = nodes
	zones := map[uint32]bool{}
	for _, nd := range nodes {
		zones[nd.Zone] = true
	}
	s.zones = len(zones)

	req = proto.NewRequest(proto.OpStatCluster)
	rsp, _, err = s.do(&req, nil, make([]byte, proto.EpochLogHeaderSize))
	if err != nil {
		return err
	}
	s.epoch = rsp.Epoch
	return nil
}

// nodeAddr is the dialling address of a cluster node.
func nodeAddr(n proto.Node) string {
	return net.JoinHostPort(n.NodeID.IP().String(), strconv.Itoa(int(n.Port)))
}

// onNode runs f with a connection to node n: the session's own connection
// when n is the sheep it talks to, a fresh one otherwise.
func (s *session) onNode(n proto.Node, f func(c *client.Client) error) error {
	if s.c != nil && nodeAddr(n) == s.c.Addr() {
		return f(s.c)
	}
	c, err := s.dial(nodeAddr(n))
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}
