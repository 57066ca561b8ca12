// Package failure classifies errors by kind — the request was invalid, something was not
// found, it conflicts with existing state, the host failed to read or write, the work was
// cancelled or ran out of time — so that the daemon can answer with the right status without
// knowing which service failed. The message of a classified error stands on its own; the
// kind only adds meaning for errors.Is.
package failure

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Kinds; test with errors.Is. Cancellation and running out of time have no kinds of their
// own: context.Canceled and context.DeadlineExceeded are theirs.
var (
	Invalid  = errors.New("invalid request")
	NotFound = errors.New("not found")
	Conflict = errors.New("conflict")
	// IO: the host failed to store or read data (disk full, quota, I/O error, read-only file
	// system). It is not the request's fault: the same request succeeds once the host is
	// fixed. Of finds it in errors that wrap such an errno without being given it.
	IO = errors.New("input/output error")
)

type kindError struct {
	kind error
	msg  string
	err  error // the cause, for errors.Is/As; nil for New
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.err }

// New returns an error of the given kind with a message formatted as by fmt.Sprintf.
func New(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Wrap gives err a kind, keeping its message and its chain (errors.Is/As still find what err
// wraps). A nil err stays nil.
func Wrap(kind error, err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: kind, msg: err.Error(), err: err}
}

// Default gives err kind unless Of finds one in it already: a cancelled import stays
// cancelled and a full disk stays IO, where the rest of what went wrong reading a request's
// input is Invalid. A nil err stays nil.
func Default(kind error, err error) error {
	if err == nil || Of(err) != nil {
		return err
	}
	return Wrap(kind, err)
}

// ioErrnos are the errors of a host that cannot store or read data.
var ioErrnos = []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS}

// Of returns err's kind, by errors.Is, or nil for an error without one. What caused the
// failure decides over what it was classified as on its way up: cancellation
// (context.Canceled, context.DeadlineExceeded) first, then IO (given, or an errno of a host
// that cannot store or read data anywhere in err's chain), then Invalid, NotFound, Conflict.
func Of(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range []error{context.Canceled, context.DeadlineExceeded, IO} {
		if errors.Is(err, k) {
			return k
		}
	}
	for _, e := range ioErrnos {
		if errors.Is(err, e) {
			return IO
		}
	}
	for _, k := range []error{Invalid, NotFound, Conflict} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// Classified reports whether err (or an error it wraps) was given a kind by New or Wrap: its
// message was written for the user and needs no more context.
func Classified(err error) bool {
	var ke *kindError
	return errors.As(err, &ke)
}
