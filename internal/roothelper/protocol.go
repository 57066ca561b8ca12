package roothelper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/fcjail"
	"golang.org/x/sys/unix"
)

// ProtocolVersion is the version of the wire protocol; hello reports it and the client refuses
// a helper that speaks another.
const ProtocolVersion = 1

// Limits of the protocol.
const (
	// MaxRequest is the largest request, in bytes; a longer one is refused unread.
	MaxRequest = 64 << 10
	// MaxResponse is the largest response the client reads.
	MaxResponse = 256 << 10
	// MaxGuests is the most guests one set_guests request may list (as many fit in
	// MaxRequest with room to spare).
	MaxGuests = 512
	// MaxOpenPorts is the most open ports one set_guests request may list.
	MaxOpenPorts = 64
	// maxFDs is the most descriptors one response carries.
	maxFDs = 1
	// MaxRequestFDs is the most descriptors one request may carry (jail_start: kernel,
	// initrd, fcjail.MaxDisks disks, log, metrics and the console); a request with more is
	// refused and every descriptor it brought closed.
	MaxRequestFDs = fcjail.MaxDisks + 5
	// readTimeout bounds how long the helper waits for a request.
	readTimeout = 5 * time.Second
	// writeTimeout bounds how long the helper waits to hand its response over.
	writeTimeout = 5 * time.Second
	// clientTimeout bounds a whole exchange as the client sees it (an operation may run
	// resolvectl or rebuild the packet filter).
	clientTimeout = 30 * time.Second
)

// Operations.
const (
	OpHello         = "hello"
	OpEnsureBridge  = "ensure_bridge"
	OpAddTap        = "add_tap"
	OpDeleteTap     = "delete_tap"
	OpListTaps      = "list_taps"
	OpSetGuests     = "set_guests"
	OpRouteDomain   = "route_domain"
	OpUnrouteDomain = "unroute_domain"
	OpRemoveBridge  = "remove_bridge"
	OpListen        = "listen"
	OpSocket        = "socket"
	OpJailStart     = "jail_start"
	OpJailDial      = "jail_dial"
	OpJailKill      = "jail_kill"
	OpJailRemove    = "jail_remove"
	OpJailList      = "jail_list"
)

// Network names the guest network a request is about; the helper serves only the networks of
// its configuration.
type Network struct {
	Bridge    string `json:"bridge"`    // the bridge's name, e.g. banger0
	CIDR      string `json:"cidr"`      // the guests' subnet, e.g. 172.16.0.0/24
	Namespace string `json:"namespace"` // a name under /run/netns, or "" for the helper's own
}

// Guest is one entry of set_guests: a tap and the only addresses accepted from it.
type Guest struct {
	Tap string `json:"tap"` // bg + 12 lowercase hex digits
	MAC string `json:"mac"` // locally administered unicast, e.g. 02:1a:2b:3c:4d:5e
	IP  string `json:"ip"`  // an IPv4 guest address of the network
	NAT bool   `json:"nat"` // may leave through the uplinks, masqueraded
}

// Request is one request: Op and the fields that op reads (the others must be empty).
type Request struct {
	Op      string  `json:"op"`
	Network Network `json:"network"`
	// Tap is the tap of add_tap and delete_tap.
	Tap string `json:"tap,omitempty"`
	// Guests is the caller's whole guest set, for set_guests.
	Guests []Guest `json:"guests,omitempty"`
	// OpenPorts are the host ports (1024 or more) the caller's guests may reach besides DNS,
	// for set_guests.
	OpenPorts []uint16 `json:"open_ports,omitempty"`
	// Proto is "tcp" or "udp" for listen; "tcp4", "tcp6", "udp4" or "udp6" for socket.
	Proto string `json:"proto,omitempty"`
	// Addr is the address listen binds: "ip:port".
	Addr string `json:"addr,omitempty"`
	// Jail is the jail (a VM id) of jail_start, jail_dial, jail_kill and jail_remove.
	Jail string `json:"jail,omitempty"`
	// Files describe, in order, the descriptors sent with jail_start (SCM_RIGHTS with the
	// request's first bytes): one entry per descriptor.
	Files []JailFile `json:"files,omitempty"`
	// Socket is the jail's socket jail_dial connects to: "api" or "vsock".
	Socket string `json:"socket,omitempty"`
}

// JailFile is one descriptor of jail_start: Name is where it goes in the jail (/kernel,
// /initrd, /disk0 … /disk15, /firecracker.log, /firecracker.metrics) or "console" for the pipe
// Firecracker's stdout and stderr go to; Writable says Firecracker may write it (disks, log
// and metrics only).
type JailFile struct {
	Name     string `json:"name"`
	Writable bool   `json:"writable,omitempty"`
}

// JailInfo describes one of the caller's jails.
type JailInfo struct {
	ID        string `json:"id"`
	UID       int    `json:"uid"`        // the jail's uid
	GID       int    `json:"gid"`        // and gid
	PID       int    `json:"pid"`        // Firecracker's (0 until started)
	StartTime uint64 `json:"start_time"` // its start time, /proc/<pid>/stat field 22
	Running   bool   `json:"running"`
}

// Error kinds on the wire.
const (
	KindInvalid  = "invalid"   // the request is malformed or not allowed
	KindNotFound = "not_found" // what it names does not exist
	KindConflict = "conflict"  // it collides with another caller's state
	KindIO       = "io"        // the host failed to read or store
	KindDenied   = "denied"    // the caller may not use the helper at all
	KindInternal = "internal"  // anything else: the operation failed
)

// WireError is an error as the helper reports it.
type WireError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Response is the helper's answer. A response with FDs > 0 carries that many descriptors
// (SCM_RIGHTS) with its first bytes.
type Response struct {
	OK    bool       `json:"ok"`
	Error *WireError `json:"error,omitempty"`
	// FDs is the number of descriptors attached: 1 for add_tap, listen and socket.
	FDs int `json:"fds,omitempty"`
	// Taps answers list_taps.
	Taps []string `json:"taps,omitempty"`
	// Protocol, Version and UID answer hello: the protocol version, the helper's build and
	// the caller's uid as the helper sees it.
	Protocol int    `json:"protocol,omitempty"`
	Version  string `json:"version,omitempty"`
	UID      *int   `json:"uid,omitempty"`
	// Jails answers hello: the helper starts Firecracker jails (its configuration names a
	// jailer and a firecracker).
	Jails bool `json:"jails,omitempty"`
	// Jail answers jail_start (with the pidfd of Firecracker as its descriptor).
	Jail *JailInfo `json:"jail,omitempty"`
	// JailList answers jail_list: the caller's jails, sorted by id.
	JailList []JailInfo `json:"jail_list,omitempty"`
}

// ErrDenied is the kind of a refusal of the caller itself (not in the group): errors.Is.
var ErrDenied = errors.New("not allowed to use banger's root helper")

// errorKind maps err to its wire kind.
func errorKind(err error) string {
	switch {
	case errors.Is(err, ErrDenied):
		return KindDenied
	}
	switch failure.Of(err) {
	case failure.Invalid:
		return KindInvalid
	case failure.NotFound:
		return KindNotFound
	case failure.Conflict:
		return KindConflict
	case failure.IO:
		return KindIO
	}
	return KindInternal
}

// remoteError is an error the helper reported, with its kind restored for errors.Is.
type remoteError struct {
	op   string
	kind string
	msg  string
}

func (e *remoteError) Error() string { return "banger's root helper, " + e.op + ": " + e.msg }

func (e *remoteError) Is(target error) bool {
	switch e.kind {
	case KindInvalid:
		return target == failure.Invalid
	case KindNotFound:
		return target == failure.NotFound
	case KindConflict:
		return target == failure.Conflict
	case KindIO:
		return target == failure.IO
	case KindDenied:
		return target == ErrDenied
	}
	return false
}

// DecodeRequest parses one request: a single JSON object of at most MaxRequest bytes, no
// unknown fields, nothing after it. It checks the syntax only; the server validates the
// values.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequest {
		return r, failure.New(failure.Invalid, "request of more than %d bytes", MaxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, failure.New(failure.Invalid, "malformed request: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, failure.New(failure.Invalid, "malformed request: data after the request object")
	}
	if err := exactKeys(b); err != nil {
		return Request{}, failure.New(failure.Invalid, "malformed request: %v", err)
	}
	return r, nil
}

// exactKeys refuses what encoding/json lets through: a key given twice in one object (the
// last would win) and a key in other case than the field's ("OP" for "op"). Every field name
// of the protocol is lower case.
func exactKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next token of an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, _ := tok.(string)
			if k != strings.ToLower(k) {
				return fmt.Errorf("key %q: keys are lower case", k)
			}
			if top.keys[k] {
				return fmt.Errorf("key %q given twice", k)
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		if top != nil && top.object {
			top.key = true // this token is a value; the next one a key
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].key = true
			}
		}
	}
}

// readRequest reads the request from c: everything until the client shuts its side down,
// with the descriptors it carries (at most MaxRequestFDs, in SCM_RIGHTS messages; received
// close-on-exec). The caller closes the files, which are returned on error too.
func readRequest(c *net.UnixConn) (Request, []*os.File, error) {
	if err := c.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
		return Request{}, nil, err
	}
	b, files, err := readMessage(c, 16<<10, MaxRequest, MaxRequestFDs)
	switch {
	case errors.Is(err, errTooManyFDs):
		return Request{}, files, failure.New(failure.Invalid, "the request carries more than %d descriptors", MaxRequestFDs)
	case errors.Is(err, errTooLong):
		return Request{}, files, failure.New(failure.Invalid, "request of more than %d bytes", MaxRequest)
	case err != nil:
		return Request{}, files, failure.New(failure.Invalid, "read the request: %v", err)
	}
	r, err := DecodeRequest(b)
	return r, files, err
}

// Kinds of readMessage's errors besides the connection's own.
var (
	errTooManyFDs = errors.New("too many descriptors")
	errTooLong    = errors.New("too long")
)

// readMessage reads from c until the peer shuts its side down: at most maxBytes bytes, read
// chunk bytes at a time, and the descriptors they carry (at most maxFDs, in SCM_RIGHTS
// messages; received close-on-exec). The descriptors received are returned on error too.
func readMessage(c *net.UnixConn, chunk, maxBytes, maxFDs int) ([]byte, []*os.File, error) {
	var (
		buf   bytes.Buffer
		files []*os.File
		data  = make([]byte, chunk)
		oob   = make([]byte, unix.CmsgSpace(4*maxFDs))
	)
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(data, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		if oobn > 0 {
			got, perr := parseRights(oob[:oobn])
			files = append(files, got...)
			if perr != nil {
				return nil, files, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 || len(files) > maxFDs {
			return nil, files, errTooManyFDs
		}
		buf.Write(data[:n])
		if buf.Len() > maxBytes {
			return nil, files, errTooLong
		}
		if errors.Is(err, io.EOF) || (n == 0 && oobn == 0 && err == nil) {
			return buf.Bytes(), files, nil
		}
		if err != nil {
			return nil, files, err
		}
	}
}

// writeResponse sends r, with files attached, and closes nothing.
func writeResponse(c *net.UnixConn, r Response, files []*os.File) error {
	r.FDs = len(files)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		_, err = c.Write(b[n:])
	}
	return err
}

// readResponse reads the helper's response and the descriptors it carries, until the helper
// closes the connection. On error every descriptor received is closed.
func readResponse(c *net.UnixConn) (Response, []*os.File, error) {
	b, files, err := readMessage(c, 32<<10, MaxResponse, maxFDs)
	fail := func(err error) (Response, []*os.File, error) {
		closeAll(files)
		return Response{}, nil, err
	}
	switch {
	case errors.Is(err, errTooManyFDs):
		return fail(fmt.Errorf("the helper's response carried more descriptors than expected"))
	case errors.Is(err, errTooLong):
		return fail(fmt.Errorf("the helper's response is longer than %d bytes", MaxResponse))
	case err != nil:
		return fail(fmt.Errorf("read the helper's response: %w", err))
	}
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		return fail(fmt.Errorf("malformed response from the helper: %w", err))
	}
	if r.FDs != len(files) {
		return fail(fmt.Errorf("the helper announced %d descriptors and sent %d", r.FDs, len(files)))
	}
	return r, files, nil
}

// parseRights turns SCM_RIGHTS messages into files.
func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse the descriptors of the helper's response: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			return files, fmt.Errorf("parse the descriptors of the helper's response: %w", err)
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "banger-helper"))
		}
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
