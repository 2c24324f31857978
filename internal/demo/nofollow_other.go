//go:build !unix

package demo

// noFollow is 0 where O_NOFOLLOW does not exist; openRegular's Lstat check
// still refuses links.
const noFollow = 0
