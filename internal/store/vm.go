package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/failure"
)

// VM is one virtual machine's record.
type VM struct {
	ID         string // 16 lower-case hex characters; CreateVM generates it when empty
	Name       string // unique
	State      string
	Image      string
	Kernel     string
	VMM        string // e.g. "qemu", "firecracker"
	Accel      string // e.g. "kvm", "tcg"
	VCPU       int
	MemoryMiB  int
	DiskBytes  int64
	Dir        string // the VM's state directory
	AutoRemove bool
	Spec       json.RawMessage // resolved spec with provenance; nil is stored as NULL
	Runtime    json.RawMessage // VMM driver's record (pid, start time, sockets); nil is NULL
	LastError  string
	// IP is the VM's address on the host bridge ("" when it has none); unique among VMs.
	IP string
	// NAT says whether the VM's traffic is masqueraded out of the host (vm run --no-nat: false).
	NAT       bool
	CreatedAt time.Time // UTC
	UpdatedAt time.Time // UTC
}

// StateSpare is the state of a VM the daemon made ahead of time for a create to take (config
// warm_spares): it is nobody's VM yet, so it is not listed, resolved, or counted as a user of
// an image.
const StateSpare = "spare"

// Spare reports whether v is a spare (StateSpare).
func (v VM) Spare() bool { return v.State == StateSpare }

const vmColumns = `id, name, state, image, kernel, vmm, accel, vcpu, memory_mib, disk_bytes, dir,
	auto_remove, spec, runtime, last_error, ip, nat, created_at, updated_at`

// CreateVM inserts v. It fills in v.ID when empty and sets v.CreatedAt (unless already set) and
// v.UpdatedAt. A name already in use yields an error matching ErrNameTaken.
func (s *Store) CreateVM(ctx context.Context, v *VM) error {
	if v.Name == "" {
		return errors.New("create vm: empty name")
	}
	rec := *v
	if rec.ID == "" {
		id, err := newID()
		if err != nil {
			return err
		}
		rec.ID = id
	} else if !validID(rec.ID) {
		return fmt.Errorf("create vm %q: id %q is not 16 lower-case hex characters", v.Name, v.ID)
	}
	t := now()
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = t
	}
	rec.CreatedAt = rec.CreatedAt.UTC().Round(0)
	rec.UpdatedAt = t
	spec, runtime, err := vmJSON(&rec)
	if err != nil {
		return fmt.Errorf("create vm %q: %w", v.Name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		rec.ID, rec.Name, rec.State, rec.Image, rec.Kernel, rec.VMM, rec.Accel, rec.VCPU, rec.MemoryMiB,
		rec.DiskBytes, rec.Dir, rec.AutoRemove, spec, runtime, rec.LastError, rec.IP, rec.NAT,
		formatTime(rec.CreatedAt), formatTime(rec.UpdatedAt))
	if err != nil {
		return fmt.Errorf("create vm %q: %w", v.Name, vmConstraint(err, rec.ID))
	}
	*v = rec
	return nil
}

// vmConstraint maps a uniqueness violation to ErrNameTaken or a duplicate-id error.
func vmConstraint(err error, id string) error {
	if !uniqueViolation(err) {
		return err
	}
	if strings.Contains(err.Error(), "vms.id") {
		return fmt.Errorf("id %s is already in use", id)
	}
	if strings.Contains(err.Error(), "vms.ip") {
		return ErrIPTaken
	}
	return ErrNameTaken
}

func vmJSON(v *VM) (spec, runtime any, err error) {
	if spec, err = jsonArg("spec", v.Spec); err != nil {
		return nil, nil, err
	}
	if runtime, err = jsonArg("runtime", v.Runtime); err != nil {
		return nil, nil, err
	}
	return spec, runtime, nil
}

// GetVM returns the VM named name, or an error matching failure.NotFound.
func (s *Store) GetVM(ctx context.Context, name string) (VM, error) {
	v, err := s.queryVM(ctx, `WHERE name = ?`, name)
	if err != nil {
		return VM{}, fmt.Errorf("vm %q: %w", name, err)
	}
	return v, nil
}

// GetVMByID returns the VM with id, or an error matching failure.NotFound.
func (s *Store) GetVMByID(ctx context.Context, id string) (VM, error) {
	v, err := s.queryVM(ctx, `WHERE id = ?`, id)
	if err != nil {
		return VM{}, fmt.Errorf("vm id %s: %w", id, err)
	}
	return v, nil
}

func (s *Store) queryVM(ctx context.Context, where string, arg any) (VM, error) {
	vms, err := s.queryVMs(ctx, where, arg)
	if err != nil {
		return VM{}, err
	}
	if len(vms) == 0 {
		return VM{}, failure.NotFound
	}
	return vms[0], nil
}

// ListVMs returns every VM, oldest first.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	vms, err := s.queryVMs(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	return vms, nil
}

// FindVMs returns the VMs whose name or id starts with prefix (case-sensitive), oldest first.
// An empty prefix matches every VM. Resolving a user's reference to one VM is the caller's job.
func (s *Store) FindVMs(ctx context.Context, prefix string) ([]VM, error) {
	vms, err := s.queryVMs(ctx,
		`WHERE substr(name, 1, length(?1)) = ?1 OR substr(id, 1, length(?1)) = ?1`, prefix)
	if err != nil {
		return nil, fmt.Errorf("find vms %q: %w", prefix, err)
	}
	return vms, nil
}

func (s *Store) queryVMs(ctx context.Context, where string, args ...any) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmColumns+` FROM vms `+where+` ORDER BY created_at, rowid`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vms []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		vms = append(vms, v)
	}
	return vms, rows.Err()
}

func scanVM(rows *sql.Rows) (VM, error) {
	var v VM
	var spec, runtime sql.NullString
	var created, updated string
	err := rows.Scan(&v.ID, &v.Name, &v.State, &v.Image, &v.Kernel, &v.VMM, &v.Accel, &v.VCPU,
		&v.MemoryMiB, &v.DiskBytes, &v.Dir, &v.AutoRemove, &spec, &runtime, &v.LastError, &v.IP, &v.NAT, &created, &updated)
	if err != nil {
		return VM{}, err
	}
	v.Spec, v.Runtime = jsonValue(spec), jsonValue(runtime)
	if v.CreatedAt, err = parseTime("created_at", created); err != nil {
		return VM{}, fmt.Errorf("vm %q: %w", v.Name, err)
	}
	if v.UpdatedAt, err = parseTime("updated_at", updated); err != nil {
		return VM{}, fmt.Errorf("vm %q: %w", v.Name, err)
	}
	return v, nil
}

// UpdateVM overwrites the record with v.ID with v (every field except ID and CreatedAt) and
// sets v.UpdatedAt to now. It returns an error matching failure.NotFound if the VM is gone and
// ErrNameTaken if v was renamed to a name in use.
func (s *Store) UpdateVM(ctx context.Context, v *VM) error {
	spec, runtime, err := vmJSON(v)
	if err != nil {
		return fmt.Errorf("update vm %q: %w", v.Name, err)
	}
	if v.Name == "" {
		return fmt.Errorf("update vm id %s: empty name", v.ID)
	}
	t := now()
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET name = ?, state = ?, image = ?, kernel = ?,
		vmm = ?, accel = ?, vcpu = ?, memory_mib = ?, disk_bytes = ?, dir = ?, auto_remove = ?,
		spec = ?, runtime = ?, last_error = ?, ip = ?, nat = ?, updated_at = ? WHERE id = ?`,
		v.Name, v.State, v.Image, v.Kernel, v.VMM, v.Accel, v.VCPU, v.MemoryMiB, v.DiskBytes, v.Dir,
		v.AutoRemove, spec, runtime, v.LastError, v.IP, v.NAT, formatTime(t), v.ID)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("update vm %q (id %s): %w", v.Name, v.ID, vmConstraint(err, v.ID))
	}
	v.UpdatedAt = t
	return nil
}

// SetVMState sets the state and last error of the VM with id and bumps its UpdatedAt. It
// returns an error matching failure.NotFound if the VM is gone.
func (s *Store) SetVMState(ctx context.Context, id, state, lastError string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET state = ?, last_error = ?, updated_at = ? WHERE id = ?`,
		state, lastError, formatTime(now()), id)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("set state of vm id %s to %q: %w", id, state, err)
	}
	return nil
}

// DeleteVM removes the VM with id, or returns an error matching failure.NotFound.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
	if err == nil {
		err = notFoundIfNone(res)
	}
	if err != nil {
		return fmt.Errorf("delete vm id %s: %w", id, err)
	}
	return nil
}
