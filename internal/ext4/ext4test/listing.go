// Package ext4test reads what an ext4 image holds with debugfs, without mounting it, for
// tests that compare images.
package ext4test

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/ext4"
)

// Listing returns, for every path of the image (but /lost+found's contents), a line with
// what makes it what it is apart from times and inode numbers: type and mode (setuid, setgid
// and sticky bits included), uid, gid, the size of regular files when withSizes, the device
// numbers of devices, the targets of symlinks, and the extended attributes (file
// capabilities) with their values.
func Listing(t testing.TB, image string, withSizes bool) map[string]string {
	t.Helper()
	entries := map[string]string{}
	var special, all []string
	dirs := []string{"/"}
	for len(dirs) > 0 {
		var script strings.Builder
		for _, d := range dirs {
			fmt.Fprintf(&script, "ls -p %s\n", quote(d))
		}
		out := debugfs(t, image, script.String())
		dirs = nil
		cur := ""
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if d, ok := strings.CutPrefix(line, "debugfs: ls -p "); ok {
				cur = unquote(d)
				continue
			}
			// /ino/mode/uid/gid/name/size/
			f := strings.Split(line, "/")
			if len(f) != 8 || cur == "" {
				continue
			}
			name := f[5]
			if name == "." || name == ".." {
				continue
			}
			p := strings.TrimSuffix(cur, "/") + "/" + name
			mode, err := strconv.ParseUint(f[2], 8, 32)
			if err != nil {
				t.Fatalf("debugfs ls -p %s: %q", cur, line)
			}
			desc := fmt.Sprintf("%07o %s:%s", mode, f[3], f[4])
			switch mode & 0o170000 {
			case 0o040000:
				if p != "/lost+found" {
					dirs = append(dirs, p)
				}
			case 0o100000:
				if withSizes {
					desc += " size " + f[6]
				}
			case 0o120000, 0o020000, 0o060000:
				special = append(special, p)
			}
			entries[p] = desc
			all = append(all, p)
		}
	}
	// Symlink targets and device numbers, then extended attributes, one debugfs run each.
	details := func(cmd string, paths []string, keep func(p, block string) string) {
		if len(paths) == 0 {
			return
		}
		var script strings.Builder
		for _, p := range paths {
			fmt.Fprintf(&script, "%s %s\n", cmd, quote(p))
		}
		out := string(debugfs(t, image, script.String()))
		blocks := strings.Split(out, "debugfs: "+cmd+" ")
		for _, b := range blocks[1:] {
			p, rest, _ := strings.Cut(b, "\n")
			p = unquote(p)
			if extra := keep(p, rest); extra != "" {
				entries[p] += " " + extra
			}
		}
	}
	fast := regexp.MustCompile(`Fast link dest: "(.*)"`)
	dev := regexp.MustCompile(`Device major/minor number: (\S+)`)
	details("stat", special, func(p, b string) string {
		if m := fast.FindStringSubmatch(b); m != nil {
			return "-> " + m[1]
		}
		if m := dev.FindStringSubmatch(b); m != nil {
			return "dev " + m[1]
		}
		return ""
	})
	details("ea_list", all, func(p, b string) string {
		var attrs []string
		for _, l := range strings.Split(b, "\n") {
			if l = strings.TrimSpace(l); l != "" && l != "Extended attributes:" {
				attrs = append(attrs, l)
			}
		}
		sort.Strings(attrs)
		if len(attrs) == 0 {
			return ""
		}
		return "xattrs[" + strings.Join(attrs, "; ") + "]"
	})
	return entries
}

// Diff lists the paths whose lines differ between two listings, at most max of them.
func Diff(a, b map[string]string, max int) []string {
	var out []string
	var paths []string
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		if a[p] != b[p] {
			if len(out) == max {
				out = append(out, "…")
				break
			}
			out = append(out, fmt.Sprintf("%s: %q vs %q", p, a[p], b[p]))
		}
	}
	return out
}

func debugfs(t testing.TB, image, script string) []byte {
	t.Helper()
	path, err := ext4.LookTool("debugfs")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, "-f", "-", image)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v\n%s", image, err, out)
	}
	return out
}

// quote puts a path in double quotes for debugfs when it holds a space.
func quote(p string) string {
	if strings.ContainsAny(p, " \t") {
		return `"` + p + `"`
	}
	return p
}

func unquote(p string) string {
	return strings.Trim(strings.TrimSpace(p), `"`)
}
