// Package failure classifies errors by kind — the request was invalid, something was not
// found, it conflicts with existing state — so that the daemon can answer with the right
// status without knowing which service failed. The message of a classified error stands on
// its own; the kind only adds meaning for errors.Is.
package failure

import (
	"errors"
	"fmt"
)

// Kinds; test with errors.Is.
var (
	Invalid  = errors.New("invalid request")
	NotFound = errors.New("not found")
	Conflict = errors.New("conflict")
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

// Classified reports whether err (or an error it wraps) has a kind.
func Classified(err error) bool {
	var ke *kindError
	return errors.As(err, &ke)
}
