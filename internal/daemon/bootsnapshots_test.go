package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/kernel"
	"github.com/banger-dev/banger/internal/snapshot"
	"github.com/banger-dev/banger/internal/vmservice"
)

// publishSnapshot puts a snapshot made with the agent build agent into snaps: a boot snapshot
// (named after a key that differs per agent) when name is "", a user snapshot otherwise.
func publishSnapshot(t *testing.T, snaps *snapshot.Store, name, agent string) string {
	t.Helper()
	m := snapshot.Meta{Name: name, Kind: snapshot.User, Created: time.Now(), Image: "img@v1", Kernel: "k", Agent: agent,
		VMM: "qemu", VCPU: 1, MemoryMiB: 256, DiskBytes: 1 << 20, Hostname: "vm1"}
	if name == "" {
		m.Kind = snapshot.Boot
		m.Key = snapshot.Combination{Image: m.Image, Kernel: m.Kernel, Agent: agent, VMM: m.VMM}.Key()
		m.Name = snapshot.BootName(m.Key)
	}
	st, err := snaps.Stage(m.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Discard()
	if _, err := st.Publish(m); err != nil {
		t.Fatal(err)
	}
	return m.Name
}

// At start the daemon drops the boot snapshots of other agent builds (banger was upgraded):
// no warm start could restore them. User snapshots and the current build's boot snapshots
// stay; an agent that cannot be read removes nothing.
func TestStartDropsBootSnapshotsOfOtherAgents(t *testing.T) {
	dir := t.TempDir()
	agentPath := filepath.Join(dir, "banger-agent")
	os.WriteFile(agentPath, []byte("agent build 2"), 0o755)
	sum := sha256.Sum256([]byte("agent build 2"))
	current := kernel.InitramfsName(hex.EncodeToString(sum[:]))
	sum = sha256.Sum256([]byte("agent build 1"))
	old := kernel.InitramfsName(hex.EncodeToString(sum[:]))

	snaps := snapshot.NewStore(filepath.Join(dir, "snapshots"))
	oldBoot := publishSnapshot(t, snaps, "", old)
	currentBoot := publishSnapshot(t, snaps, "", current)
	user := publishSnapshot(t, snaps, "mine", old)
	vms := vmservice.New(vmservice.Options{Snapshots: snaps, Log: slog.New(slog.DiscardHandler)})
	names := func() []string {
		list, err := snaps.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range list {
			out = append(out, i.Name)
		}
		slices.Sort(out)
		return out
	}
	all := names()

	ctx := context.Background()
	if err := dropOtherAgentsBootSnapshots(ctx, vms, filepath.Join(dir, "missing"), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("an unreadable agent: no error")
	}
	if got := names(); !slices.Equal(got, all) {
		t.Errorf("an unreadable agent removed snapshots: %v; want %v", got, all)
	}

	if err := dropOtherAgentsBootSnapshots(ctx, vms, agentPath, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	want := []string{currentBoot, user}
	slices.Sort(want)
	if got := names(); !slices.Equal(got, want) {
		t.Errorf("snapshots = %v; want %v (boot snapshot %s of the old agent dropped)", got, want, oldBoot)
	}
}
