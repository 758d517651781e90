package health

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkVolume refuses a read-only volume or one with less than minFree
// bytes free for unprivileged writers.
func checkVolume(dir string, minFree uint64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return &NotReadyError{Part: "data volume", Reason: "cannot be examined"}
	}
	if st.Flags&unix.ST_RDONLY != 0 {
		return &NotReadyError{Part: "data volume", Reason: "read-only"}
	}
	if free := st.Bavail * uint64(st.Bsize); free < minFree {
		return &NotReadyError{Part: "data volume", Reason: fmt.Sprintf("full (%d MiB free, %d MiB needed)", free>>20, minFree>>20)}
	}
	return nil
}
