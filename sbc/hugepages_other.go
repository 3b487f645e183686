//go:build !linux

package sbc

import "errors"

func adviseHugePages([]byte) error { return errors.ErrUnsupported }

func thpMode() string { return "" }
