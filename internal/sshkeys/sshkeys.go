// Package sshkeys owns banger's ssh material on the host: the managed client key that every
// guest authorizes, the per-VM host keys banger generates (so that known_hosts is written
// before the first connection: no trust on first use), banger's own known_hosts file, the
// ssh_config file with a Host entry per VM, and the marker-fenced Include block in
// ~/.ssh/config that only `banger ssh-config --install` adds.
package sshkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// KeyPair is an ed25519 key in OpenSSH formats.
type KeyPair struct {
	Private []byte // OpenSSH PEM ("-----BEGIN OPENSSH PRIVATE KEY-----")
	Public  []byte // authorized_keys line, with a newline
}

// Generate makes an ed25519 key pair with the given comment.
func Generate(comment string) (KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return KeyPair{}, fmt.Errorf("encode private key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return KeyPair{}, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return KeyPair{Private: pem.EncodeToMemory(block), Public: []byte(line + "\n")}, nil
}

// EnsureUserKey returns the public key of banger's client key at path (private) and
// path.pub, creating both (0600 / 0644, the directory 0700) on first use. An existing
// private key without its .pub gets the .pub derived from it.
func EnsureUserKey(path string) ([]byte, error) {
	if pub, err := os.ReadFile(path + ".pub"); err == nil {
		if _, err := os.Stat(path); err == nil {
			return pub, nil
		}
	}
	if priv, err := os.ReadFile(path); err == nil {
		signer, err := ssh.ParsePrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("ssh key %s: %w (set ssh_key_path to a key without a passphrase, or move it aside to get a new one)", path, err)
		}
		pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
		if err := os.WriteFile(path+".pub", pub, 0o644); err != nil {
			return nil, err
		}
		return pub, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read ssh key %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	host, _ := os.Hostname()
	kp, err := Generate("banger@" + host)
	if err != nil {
		return nil, err
	}
	// Write the private key exclusively: two daemons racing must not overwrite each other.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return EnsureUserKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("create ssh key %s: %w", path, err)
	}
	if _, err := f.Write(kp.Private); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path+".pub", kp.Public, 0o644); err != nil {
		return nil, err
	}
	return kp.Public, nil
}

// HostKeyLine is the known_hosts form of a public key (authorized_keys line) for names.
func HostKeyLine(names []string, authorizedKey []byte) (string, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey(authorizedKey)
	if err != nil {
		return "", fmt.Errorf("parse host key: %w", err)
	}
	return strings.Join(names, ",") + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), nil
}
