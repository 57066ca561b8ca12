package vmservice

import (
	"context"
	"fmt"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/host"
	"github.com/banger-dev/banger/internal/vmm"
)

// VMMFacts gathers the facts vmm.Choose decides on: this host's acceleration and the probes of
// the registered drivers, in the order they were given (the order of preference).
func (s *Service) VMMFacts(ctx context.Context) vmm.Facts {
	f := vmm.Facts{Accel: s.host.DetectAccel()}
	for _, d := range s.driverOrder {
		f.Drivers = append(f.Drivers, d.Probe(ctx))
	}
	return f
}

// chooseDriver picks the VMM for a new VM (vmm.Choose) and tells the observer about fallbacks.
func (s *Service) chooseDriver(ctx context.Context, cfg config.Config, obs Observer) (vmm.Driver, host.Accel, error) {
	c, err := vmm.Choose(cfg.VMM, cfg.Path, s.VMMFacts(ctx))
	if err != nil {
		return nil, "", err
	}
	d, ok := s.drivers[c.Driver]
	if !ok {
		return nil, "", fmt.Errorf("no %s driver is available in this build", c.Driver)
	}
	if c.Notice {
		obs.notice(c.Reason)
	}
	return d, c.Accel, nil
}
