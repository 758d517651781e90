package client

import (
	"context"
	"strings"
	"time"
)

// ConsoleLink is a one-time sign-in link for the web console (POST
// /v1/console/links, any administrator): open Path on the server's URL in
// a browser within a minute; it works once.
type ConsoleLink struct {
	// Path is the link under the server's URL: /ui/signin?link=….
	Path      string    `json:"path"`
	Identity  string    `json:"identity"`
	ExpiresAt time.Time `json:"expires_at"`
}

// CreateConsoleLink asks for a one-time console sign-in link for the
// caller's credential.
func (c *Client) CreateConsoleLink(ctx context.Context) (*ConsoleLink, error) {
	var out ConsoleLink
	return &out, c.do(ctx, "POST", "/v1/console/links", "", struct{}{}, &out)
}

// URL is the link on the server the client talks to.
func (c *Client) URL(path string) string {
	return strings.TrimRight(c.base.String(), "/") + path
}
