package api

import (
	"errors"
	"syscall"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/schema"
)

// isNoSpace: the write was refused under the disk reserve, or failed for
// want of space.
func isNoSpace(err error) bool {
	return errors.Is(err, disk.ErrLow) || errors.Is(err, syscall.ENOSPC)
}

// isBadRequest: the caller got the request wrong (a field, a schema, a
// resolution, a size).
func isBadRequest(err error) bool {
	var fe *schema.FieldError
	var br badRequestError
	return errors.As(err, &fe) || errors.As(err, &br) ||
		errors.Is(err, crdt.ErrBadResolution) || errors.Is(err, crdt.ErrTooLarge) || errors.Is(err, crdt.ErrNoFields) ||
		errors.Is(err, schema.ErrUnknownCollection) || errors.Is(err, schema.ErrInvalidSchema) ||
		errors.Is(err, schema.ErrDestructiveChange)
}
