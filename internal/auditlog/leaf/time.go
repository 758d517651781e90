package leaf

import "time"

func timeFromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
