package proto

import "errors"

// ResultOf maps an error back to the wire result code: the Result it wraps,
// or SUCCESS for nil, or EIO for anything else.
func ResultOf(err error) Result {
	if err == nil {
		return ResSuccess
	}
	var r Result
	if errors.As(err, &r) {
		return r
	}
	return ResEIO
}
