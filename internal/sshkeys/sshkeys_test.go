package sshkeys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestEnsureUserKeyCreatesOnceAndDerivesPub(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh", "id_ed25519")
	pub1, err := EnsureUserKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	priv, _ := os.ReadFile(path)
	signer, err := ssh.ParsePrivateKey(priv)
	if err != nil {
		t.Fatalf("private key does not parse as an OpenSSH key: %v", err)
	}
	if string(ssh.MarshalAuthorizedKey(signer.PublicKey()))[:80] != string(pub1)[:80] {
		t.Error("the .pub does not match the private key")
	}
	pub2, err := EnsureUserKey(path)
	if err != nil || string(pub2) != string(pub1) {
		t.Errorf("second call made a new key (%v)", err)
	}
	os.Remove(path + ".pub")
	pub3, err := EnsureUserKey(path)
	if err != nil || !strings.HasPrefix(string(pub3), "ssh-ed25519 ") {
		t.Errorf("missing .pub must be derived from the private key: %q %v", pub3, err)
	}
}

func TestEnsureUserKeyRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	_ = os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := EnsureUserKey(path); err == nil || !strings.Contains(err.Error(), "ssh_key_path") {
		t.Errorf("err = %v, want a hint about ssh_key_path", err)
	}
}

func TestKnownHosts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_hosts")
	_ = os.WriteFile(path, []byte("other.vm ssh-ed25519 AAAAkeep\n"), 0o600)
	kp, _ := Generate("")
	line, err := HostKeyLine([]string{"dev.vm", "172.16.0.2"}, kp.Public)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetKnownHost(path, "dev.vm", line); err != nil {
		t.Fatal(err)
	}
	kp2, _ := Generate("")
	line2, _ := HostKeyLine([]string{"dev.vm", "172.16.0.2"}, kp2.Public)
	if err := SetKnownHost(path, "dev.vm", line2); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if strings.Count(string(b), "dev.vm") != 1 || !strings.Contains(string(b), line2) || !strings.Contains(string(b), "other.vm ssh-ed25519 AAAAkeep") {
		t.Errorf("known_hosts after replacing dev.vm:\n%s", b)
	}
	if err := RemoveKnownHost(path, "dev.vm"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if strings.Contains(string(b), "dev.vm") || !strings.Contains(string(b), "other.vm") {
		t.Errorf("after remove:\n%s", b)
	}
	if err := RemoveKnownHost(filepath.Join(t.TempDir(), "none"), "x"); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

func TestInstallUninstallKeepUserContent(t *testing.T) {
	dir := t.TempDir()
	userCfg := filepath.Join(dir, ".ssh", "config")
	user := "Host work\n  HostName work.example\n\nHost *\n  ServerAliveInterval 30\n"
	_ = os.MkdirAll(filepath.Dir(userCfg), 0o700)
	_ = os.WriteFile(userCfg, []byte(user), 0o640)

	changed, err := Install(userCfg, "/home/ann/.config/banger/ssh_config")
	if err != nil || !changed {
		t.Fatalf("Install = %v, %v", changed, err)
	}
	b, _ := os.ReadFile(userCfg)
	if !strings.HasPrefix(string(b), beginMarker) || !strings.HasSuffix(string(b), user) {
		t.Errorf("after install:\n%s\nwant the block first and the user's content intact after it", b)
	}
	if st, _ := os.Stat(userCfg); st.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", st.Mode().Perm())
	}
	if changed, err := Install(userCfg, "/home/ann/.config/banger/ssh_config"); err != nil || changed {
		t.Errorf("second install = %v, %v; want no change", changed, err)
	}
	b2, _ := os.ReadFile(userCfg)
	if string(b2) != string(b) || strings.Count(string(b2), beginMarker) != 1 {
		t.Errorf("second install changed the file:\n%s", b2)
	}
	if !Installed(userCfg) {
		t.Error("Installed = false after install")
	}
	removed, err := Uninstall(userCfg)
	if err != nil || !removed {
		t.Fatalf("Uninstall = %v, %v", removed, err)
	}
	b3, _ := os.ReadFile(userCfg)
	if string(b3) != user {
		t.Errorf("after uninstall:\n%q\nwant exactly the user's original content\n%q", b3, user)
	}
	if removed, _ := Uninstall(userCfg); removed {
		t.Error("second uninstall removed something")
	}
}

func TestInstallCreatesTheFileAndMovesAnOldBlockFirst(t *testing.T) {
	dir := t.TempDir()
	userCfg := filepath.Join(dir, "config")
	if _, err := Install(userCfg, "/x/ssh_config"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(userCfg); st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", st.Mode().Perm())
	}
	// A block for another path (banger moved) is replaced, not duplicated.
	_ = os.WriteFile(userCfg, []byte("Host a\n  User b\n\n"+IncludeBlock("/old/ssh_config")), 0o600)
	if changed, err := Install(userCfg, "/new/ssh_config"); err != nil || !changed {
		t.Fatal(changed, err)
	}
	b, _ := os.ReadFile(userCfg)
	if strings.Contains(string(b), "/old/") || strings.Count(string(b), beginMarker) != 1 || !strings.HasPrefix(string(b), beginMarker) {
		t.Errorf("after reinstall with a new path:\n%s", b)
	}
}

func TestWriteConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh_config")
	err := WriteConfig(path, "/k/id ed", "/s/known_hosts", "/opt/my tools/banger", []Host{{Name: "web"}, {Name: "dev"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	if strings.Index(s, "Host dev.vm") > strings.Index(s, "Host web.vm") ||
		!strings.Contains(s, `IdentityFile "/k/id ed"`) || !strings.Contains(s, "StrictHostKeyChecking yes") || !strings.Contains(s, "HostKeyAlias web.vm") ||
		!strings.Contains(s, "ProxyCommand '/opt/my tools/banger' vm ssh-proxy dev\n") {
		t.Errorf("ssh_config:\n%s", s)
	}
	// No entry names a guest address: ssh must never dial one from wherever it runs.
	if strings.Contains(s, "HostName") {
		t.Errorf("ssh_config names a HostName:\n%s", s)
	}
}

func TestProxyCommandQuotesForTheShellAndSSHTokens(t *testing.T) {
	for cli, want := range map[string]string{
		"/usr/local/bin/banger": "/usr/local/bin/banger vm ssh-proxy dev",
		"/home/a b/banger":      "'/home/a b/banger' vm ssh-proxy dev",
		"/x/it's/banger":        `'/x/it'\''s/banger' vm ssh-proxy dev`,
		"/x/100%/banger":        "'/x/100%%/banger' vm ssh-proxy dev",
		"/x/$(touch pwned)/b":   "'/x/$(touch pwned)/b' vm ssh-proxy dev",
	} {
		if got := ProxyCommand(cli, "dev"); got != want {
			t.Errorf("ProxyCommand(%q) = %q, want %q", cli, got, want)
		}
	}
}

// A ~/.ssh/config that is a symlink (into a dotfiles repository) stays a symlink through
// install and uninstall: the file it points at is what changes.
func TestInstallUninstallKeepASymlinkedConfig(t *testing.T) {
	dir := t.TempDir()
	dotfiles := filepath.Join(dir, "dotfiles")
	_ = os.MkdirAll(dotfiles, 0o700)
	target := filepath.Join(dotfiles, "ssh_config")
	user := "Host work\n  HostName work.example\n"
	if err := os.WriteFile(target, []byte(user), 0o640); err != nil {
		t.Fatal(err)
	}
	sshDir := filepath.Join(dir, ".ssh")
	_ = os.MkdirAll(sshDir, 0o700)
	// Two hops, the first relative: .ssh/config -> ../dotfiles/link -> ssh_config.
	if err := os.Symlink("ssh_config", filepath.Join(dotfiles, "link")); err != nil {
		t.Fatal(err)
	}
	userCfg := filepath.Join(sshDir, "config")
	if err := os.Symlink("../dotfiles/link", userCfg); err != nil {
		t.Fatal(err)
	}
	stillLinks := func(when string) {
		t.Helper()
		for _, l := range []string{userCfg, filepath.Join(dotfiles, "link")} {
			if st, err := os.Lstat(l); err != nil || st.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("after %s: %s is no longer a symlink (%v)", when, l, err)
			}
		}
		if st, _ := os.Stat(target); st.Mode().Perm() != 0o640 {
			t.Errorf("after %s: target mode %v, want 0640 kept", when, st.Mode().Perm())
		}
		if left, _ := filepath.Glob(filepath.Join(dotfiles, ".ssh_config.*")); len(left) > 0 {
			t.Errorf("after %s: temporary files left: %v", when, left)
		}
	}

	if changed, err := Install(userCfg, "/x/ssh_config"); err != nil || !changed {
		t.Fatalf("Install = %v, %v", changed, err)
	}
	stillLinks("install")
	b, _ := os.ReadFile(target)
	if !strings.HasPrefix(string(b), beginMarker) || !strings.HasSuffix(string(b), user) {
		t.Errorf("target after install:\n%s", b)
	}
	if removed, err := Uninstall(userCfg); err != nil || !removed {
		t.Fatalf("Uninstall = %v, %v", removed, err)
	}
	stillLinks("uninstall")
	if b, _ := os.ReadFile(target); string(b) != user {
		t.Errorf("target after uninstall: %q, want %q", b, user)
	}

	// A dangling link is written through: its target is created.
	dangling := filepath.Join(dir, "dangling")
	_ = os.Symlink(filepath.Join(dotfiles, "new_config"), dangling)
	if _, err := Install(dangling, "/x/ssh_config"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(dangling); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("dangling link replaced by a file")
	}
	if !Installed(filepath.Join(dotfiles, "new_config")) {
		t.Errorf("target of the dangling link has no block")
	}

	// A loop is refused with an error, not followed forever.
	loop := filepath.Join(dir, "loop")
	_ = os.Symlink("loop", loop)
	if _, err := Install(loop, "/x/ssh_config"); err == nil {
		t.Error("Install through a symlink loop succeeded")
	}
}

// Uninstall restores the absence of a config that install created; a file with something
// else in it stays, and a file that existed (empty or not) is never removed.
func TestUninstallRemovesTheConfigInstallCreated(t *testing.T) {
	dir := t.TempDir()
	userCfg := filepath.Join(dir, "config")
	if _, err := Install(userCfg, "/x/ssh_config"); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(userCfg, "/y/ssh_config"); err != nil { // reinstalled after banger moved
		t.Fatal(err)
	}
	if removed, err := Uninstall(userCfg); err != nil || !removed {
		t.Fatalf("Uninstall = %v, %v", removed, err)
	}
	if _, err := os.Lstat(userCfg); !os.IsNotExist(err) {
		t.Errorf("after install into no file and uninstall, the file is still there: %v", err)
	}

	// Created by install, then the user added a host: the user's part stays.
	if _, err := Install(userCfg, "/x/ssh_config"); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(userCfg, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("Host mine\n  User me\n")
	f.Close()
	if _, err := Uninstall(userCfg); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(userCfg); err != nil || string(b) != "Host mine\n  User me\n" {
		t.Errorf("after uninstall with the user's host: %q, %v", b, err)
	}

	// An empty file the user had stays.
	other := filepath.Join(dir, "existing")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(other, "/x/ssh_config"); err != nil {
		t.Fatal(err)
	}
	if _, err := Uninstall(other); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(other); err != nil || len(b) != 0 {
		t.Errorf("an existing empty config: %q, %v; want it kept, empty", b, err)
	}
}

// A dangling symlinked config: install creates its target, uninstall removes the target and
// keeps the user's link.
func TestUninstallKeepsADanglingLinkItFilled(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "config")
	target := filepath.Join(dir, "dotfiles-config")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(link, "/x/ssh_config"); err != nil {
		t.Fatal(err)
	}
	if _, err := Uninstall(link); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link: %v %v; want it kept", st, err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("the target install made is still there: %v", err)
	}
}
