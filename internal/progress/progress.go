// Package progress carries progress reports of long operations (downloads, image builds, boots)
// from the services that do the work to whoever renders them. It is deliberately tiny so that
// every layer can depend on it.
package progress

// Update is one progress report. Stage names a step in a stable, machine-readable way
// ("kernel.download", "image.build", "vm.boot"); Message is for people. Done and Total count
// bytes (or items) when the stage has a measurable size; Total is 0 when unknown.
type Update struct {
	Stage   string
	Message string
	Done    int64
	Total   int64
}

// Func receives updates. It must be cheap and safe for concurrent use; a nil Func is allowed
// and means nobody is listening.
type Func func(Update)

// Report sends u to f unless f is nil.
func (f Func) Report(u Update) {
	if f != nil {
		f(u)
	}
}

// Stage reports the start of a stage with a message.
func (f Func) Stage(stage, message string) {
	f.Report(Update{Stage: stage, Message: message})
}
