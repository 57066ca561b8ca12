package catalog

// What snapshots need of images and kernels. A snapshot restores onto the image version and
// the kernel it was taken with: the version stays while any snapshot uses it (collection
// skips it), and an image or kernel is not deleted while user snapshots use it. Boot
// snapshots are banger's cache of warm starts: they go with the image or kernel they were
// made from, and when a new image version or kernel replaces it.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/failure"
	"github.com/banger-dev/banger/internal/snapshot"
)

// snapshotsUsing returns the names of the user and the boot snapshots whose description
// match selects, each sorted.
func (s *sources) snapshotsUsing(match func(snapshot.Meta) bool) (user, boot []string, err error) {
	list, err := s.o.Snapshots.List()
	if err != nil {
		return nil, nil, err
	}
	for _, i := range list {
		if !match(i.Meta) {
			continue
		}
		if i.Kind == snapshot.Boot {
			boot = append(boot, i.Name)
		} else {
			user = append(user, i.Name)
		}
	}
	slices.Sort(user)
	slices.Sort(boot)
	return user, boot, nil
}

// dropBootSnapshots removes the boot snapshots whose description match selects, waiting for
// restores that read them, and returns their names. why is logged with each.
func (s *sources) dropBootSnapshots(why string, match func(snapshot.Meta) bool) ([]string, error) {
	_, boot, err := s.snapshotsUsing(match)
	if err != nil {
		return nil, err
	}
	var dropped []string
	var errs []error
	for _, name := range boot {
		err := s.o.Snapshots.Remove(name)
		if failure.Of(err) == failure.NotFound {
			continue // removed meanwhile (snapshot rm)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.o.Log.Info("removed boot snapshot", "name", name, "why", why)
		dropped = append(dropped, name)
	}
	if len(dropped) > 0 && s.o.BootSnapshotsDropped != nil {
		s.o.BootSnapshotsDropped(dropped)
	}
	return dropped, errors.Join(errs...)
}

// ofImage selects the snapshots of any version of the named image.
func ofImage(name string) func(snapshot.Meta) bool {
	return func(m snapshot.Meta) bool { n, _ := SplitRef(m.Image); return n == name }
}

// ofKernel selects the snapshots of the named kernel.
func ofKernel(name string) func(snapshot.Meta) bool {
	return func(m snapshot.Meta) bool { return m.Kernel == name }
}

// usedBySnapshots is the conflict of deleting what (an image, a kernel) while the user
// snapshots named restore onto it.
func usedBySnapshots(what string, names []string) error {
	return failure.New(failure.Conflict, "%s is used by %s %s (a snapshot restores onto the image and kernel it was taken from); remove %s first with `banger snapshot rm %s`",
		what, plural(len(names), "snapshot", "snapshots"), strings.Join(names, ", "), plural(len(names), "it", "them"), strings.Join(names, " "))
}

// dropReplacedBootSnapshots removes the boot snapshots of the image's versions other than
// ref, its new current version: new VMs boot ref, so no warm start restores the others. It
// only logs a failure: the new version is published either way, and the next publish or
// `banger snapshot rm` removes what is left.
func (im *Images) dropReplacedBootSnapshots(ref string) {
	name, _ := SplitRef(ref)
	_, err := im.dropBootSnapshots(fmt.Sprintf("image %s has a new version", name), func(m snapshot.Meta) bool {
		return ofImage(name)(m) && m.Image != ref
	})
	if err != nil {
		im.o.Log.Warn("remove boot snapshots of replaced image versions", "image", name, "err", err)
	}
}
