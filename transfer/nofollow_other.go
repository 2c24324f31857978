//go:build !unix

package transfer

// oNoFollow is 0 where the platform has no O_NOFOLLOW.
const oNoFollow = 0

// oNonBlock is 0 where the platform has no O_NONBLOCK.
const oNonBlock = 0
