package identity_test

import (
	"fmt"

	"github.com/mica-pki/mica/identity"
)

func ExampleParse() {
	id, err := identity.Parse("spiffe://example.org/billing/api, api.billing.example.org")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(id.Primary())
	fmt.Println(id.SANs())
	// Output:
	// spiffe://example.org/billing/api
	// [spiffe://example.org/billing/api api.billing.example.org]
}
