// Package roothelper is banger's root helper: the one small process that keeps root so that
// bangerd can run as the user who uses it (issue 17). It does, for root and the members of
// one group, what guest networking needs privilege for — the bridge, taps handed to the
// caller, banger's nftables tables, sockets in banger's network namespaces and the DNS
// routing of the vm domain — and starting Firecracker's jailer, and nothing else: no VMs, no
// store, no business logic. Server
// is the helper (cmd/banger-helper runs it); Client is its other end, the Host of package
// vmnet for an unprivileged daemon.
//
// # Who may ask
//
// The helper listens on a unix stream socket (/run/banger/helper.sock, mode 0660, group
// banger; made by systemd's banger-helper.socket or by the helper itself). On every
// connection it reads the caller's credentials from the kernel (SO_PEERCRED: uid, gid, pid;
// SO_PEERGROUPS: supplementary groups) and serves root, or a process whose primary or
// supplementary groups include the configured group (default banger). Anyone else gets a
// response of kind "denied" before the helper reads a byte of theirs. The client, for its
// part, talks only to a socket served by root (SO_PEERCRED of the helper).
//
// # Protocol
//
// One request per connection. The client writes one JSON object (Request) of at most
// MaxRequest (64 KiB) bytes and shuts its side down; the helper answers with one JSON object
// (Response) and closes. A request is refused (kind "invalid") when it is longer, is not
// exactly one object (trailing data other than white space), has a field the protocol does
// not know, a key in other case than the field's or a key given twice, or a value of the
// wrong type. The helper waits at most 5 s for the request and 5 s to hand the response
// over; the client bounds the whole exchange to 30 s (jail_start: 2 min). Descriptors (a tap
// queue, a socket, a pidfd) come with the response's first bytes as SCM_RIGHTS; Response.FDs
// says how many. Only jail_start's request carries descriptors (at most MaxRequestFDs, one
// per entry of its files); any other request that carries one, or a request that carries
// more, is refused and every descriptor closed.
//
// A response is {"ok":true, ...} or {"ok":false,"error":{"kind":K,"message":M}} with kind
// one of: invalid (the request is malformed or not allowed), not_found, conflict (it would
// touch another uid's tap or guests, or a link that is not a tap), io, denied (the caller
// may not use the helper), internal. The client turns them back into errors that
// errors.Is matches with failure.Invalid, failure.NotFound, failure.Conflict, failure.IO and
// ErrDenied.
//
// Every request names its network: {"bridge":B,"cidr":C,"namespace":N}. B must be a bridge
// of the helper's configuration and C exactly its CIDR (canonical form, e.g.
// "172.16.0.0/24"). N is "" for the helper's own network namespace (allowed unless the
// configuration says host_namespace = false) or the name of a namespace under /run/netns that
// starts with the configured prefix (default "banger"; an empty prefix allows none): letters,
// digits, '_', '.', '-', at most 63 characters, never a path. The helper opens
// /run/netns/N without following links and works in it only when it is a network
// namespace (nsfs); a missing one is not_found.
//
// Fields an operation does not read must be absent or empty. The operations:
//
//   - hello: no fields. Answers protocol (ProtocolVersion), version (the helper's build) and
//     uid (the caller's, as the helper sees it). Changes nothing.
//   - ensure_bridge: no fields. Makes the bridge with the host address (the CIDR's first) and
//     brings it up; repairs a bridge that lost its address or went down. Refuses a link of
//     that name that is not a bridge. Idempotent.
//   - add_tap: tap, "bg" and exactly 12 lowercase hex digits (hostnet.TapName of a VM id).
//     Ensures the bridge, then makes the tap persistent (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR),
//     owned by the caller's uid (TUNSETOWNER), attached to the bridge and up, and answers
//     with one descriptor: an open queue of it, for the VMM (QEMU's -netdev tap,fd=N). A tap
//     of that name the caller owns (root: any) is replaced; one another uid owns, or a link
//     of that name that is not a tap, is a conflict. Repeating it gives a fresh tap.
//   - delete_tap: tap, as for add_tap. Removes the caller's tap (root: any banger tap). A
//     missing tap is fine; another uid's tap, or a link that is not a tap, is a conflict.
//   - list_taps: no fields. Answers taps: the names of the banger taps (bg + 12 hex) the
//     caller owns, sorted (for root: uid 0's and those without an owner — not other users',
//     which a root daemon reconciling its own taps would otherwise remove).
//   - set_guests: guests, a list of at most MaxGuests (512) {"tap","mac","ip","nat"}: tap as for
//     add_tap; mac a locally administered unicast address in lowercase xx:xx:xx:xx:xx:xx; ip
//     an IPv4 address of the CIDR other than its network, host and broadcast addresses;
//     nat whether it may leave through the host's uplinks, masqueraded. No tap, mac or ip
//     twice. And open_ports, at most MaxOpenPorts host ports of 1024 or more (ports any user
//     could serve), each once, that the guests may reach besides DNS (refused altogether when
//     the configuration says callers_open_ports = false; privileged ports only by root's
//     host_ports_open_to_guests). Replaces the caller's guest set and ports (an empty list
//     empties both) and rewrites banger's packet filter (hostnet.SetGuests: tables bridge
//     banger and inet banger, in one transaction) to admit the union of every uid's set, with
//     the union of the configured and every uid's ports open; nothing else in the ruleset is
//     touched. A guest whose tap or address another uid's set holds, or whose tap exists
//     and belongs to another uid, is a conflict; on any failure the caller's old set stays.
//     While any set is not empty, the helper follows changes of the default route (the
//     uplinks NAT guests leave through) by re-applying the filter. Idempotent.
//   - route_domain, unroute_domain: no fields. In the helper's own namespace, where
//     systemd-resolved runs, sends the vm domain to the bridge's address (resolvectl dns and
//     domain ~vm on the bridge) or reverts that; otherwise nothing. Idempotent.
//   - remove_bridge: no fields. Removes the bridge when nothing is attached to it; a missing
//     bridge is fine.
//   - listen: proto "tcp" or "udp", addr "ip:port": the bridge's host address with port 53,
//     or 127.0.0.1 with a port of 1024 or more — nothing else. Answers with one descriptor: a
//     socket bound there (listening, for tcp) in the network's namespace, for banger's DNS
//     server.
//   - socket: proto "tcp4", "tcp6", "udp4" or "udp6"; only for a network in a namespace.
//     Answers with one descriptor: an unbound, unconnected socket made in the namespace, which
//     the caller connects itself (the DNS server's upstream queries). It carries no
//     privilege: binding it to a privileged port is still checked against the caller.
//
// The jail operations need [jails] in the configuration (hello answers "jails":true then);
// without it they are invalid. A jail is named by jail, a VM id (letters, digits and '-', at
// most 64). It lives in <base>/<firecracker's file name>/<jail>/root, beside the helper's
// record of it (jail.json: the caller's uid, the jail's uid and gid, its process, the files
// and tap to give back), so that it survives a restart of the helper. Only the uid that made a
// jail may use or remove it; any other uid gets a conflict.
//
//   - jail_start: jail, files (one {"name","writable"} per descriptor sent, in order), tap
//     (optional, as for add_tap). Names: kernel, initrd, disk0 … disk15 (without a gap),
//     firecracker.log, firecracker.metrics, each once, and console; kernel, disk0, the log,
//     the metrics and the console are required; kernel, initrd and console read-only, log and
//     metrics writable. Each descriptor must be a regular file the caller owns (the console: a
//     pipe). Makes the jail with a uid and gid of its own (the lowest of the range no jail
//     uses and no account names); links each writable file in and gives it to the jail's
//     group (chown -1:gid, g+rw; recorded first); links each read-only file that all may read,
//     copies the others (at most 4 GiB); lends the caller's tap to the jail's uid
//     (TUNSETOWNER, the tap still counts as the caller's for the other operations); makes
//     root and root/run the jail's; and runs the configured jailer (`--id jail --exec-file
//     FIRECRACKER --uid U --gid G --chroot-base-dir BASE [--netns /run/netns/N] -- --api-sock
//     /run/api.sock --level Warning`, empty environment, its own session, the console as
//     stdout and stderr). Answers jail (id, uid, gid, pid, start_time) and one descriptor: a
//     pidfd of the process, which the helper reaps. A stale jail of the caller's (not running)
//     is replaced; a running one or another uid's is a conflict. On any failure what was done
//     is undone.
//   - jail_dial: jail, socket "api" or "vsock". Connects to run/api.sock or run/vsock.sock in
//     the jail, walking the jail without following a symlink and only to a socket its uid owns
//     and serves (package fcjail); answers one descriptor, the connection. Not there (yet) is
//     not_found.
//   - jail_kill: jail. SIGKILL to its Firecracker if the recorded process still runs. A
//     missing jail is fine.
//   - jail_remove: jail. Kills and waits for its Firecracker (at most 10 s), gives the files
//     back (group and mode, only the recorded inode where it was put, still the caller's),
//     gives the tap back to the caller, removes the jail. A missing jail is fine.
//   - jail_list: no fields. Answers jail_list, the caller's jails with whether they run.
//
// # Configuration
//
// Root's file /etc/banger/helper.toml (--config; banger's defaults when the default file is
// missing), unknown keys refused:
//
//	group = "banger"             # who besides root may ask
//	namespace_prefix = "banger"  # namespaces the helper works in; "" for none
//	host_namespace = true        # networks in the helper's own namespace
//	callers_open_ports = true    # callers may open host ports >= 1024 to their guests
//	state_dir = "/run/banger-helper"
//	[jails]                      # Firecracker jails for callers; off without jailer and firecracker
//	jailer = ""                  # the jailer to run as root (absolute path)
//	firecracker = ""             # the firecracker it runs (absolute; its name contains "firecracker")
//	base = "/var/lib/banger/jail"  # on the filesystem of the callers' VM files (hard links)
//	first_id = 900000            # the jails' uids and gids: first_id … first_id+id_count-1
//	id_count = 100000
//	per_caller = 64              # the most jails one uid may have
//	[[network]]                  # one per bridge served; replaces the default network
//	bridge = "banger0"
//	cidr = "172.16.0.0/24"
//	host_ports_open_to_guests = []  # host ports every guest may reach besides DNS
//
// # State and logging
//
// The helper keeps per network and caller uid the last guest set, in memory and in
// state_dir (so that a restarted helper keeps admitting every uid's guests), and the marker
// of having turned IP forwarding on; and per jail its record, beside the jail. It logs every request to stderr (the journal under
// systemd): caller uid and pid, operation, network, the tap or address, and the outcome.
package roothelper
