package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
)

// RuleRequest is what a CEL rule sees as the variable `request`. Field
// names in rules are the `cel` tags. It is a Go struct rather than a map so
// that a misspelt field (request.spife_id) or a wrong type
// (request.ttl_seconds > "1h") fails when the config is loaded, not when a
// request arrives.
type RuleRequest struct {
	Profile    string   `cel:"profile"`
	SPIFFEID   string   `cel:"spiffe_id"` // "" when the request has none
	DNS        []string `cel:"dns"`
	IPs        []string `cel:"ips"`
	TTLSeconds int64    `cel:"ttl_seconds"` // the decided TTL, after defaults
	KeyType    string   `cel:"key_type"`    // e.g. "ecdsa-p256", "rsa"
	KeyBits    int64    `cel:"key_bits"`
	Method     string   `cel:"method"`
	Requester  string   `cel:"requester"`
	Source     string   `cel:"source"` // "" when unknown
}

// ruleCostLimit bounds the work one rule evaluation may do. Cost is counted
// in CEL's abstract units (roughly one per operation, more for string and
// list work), so the limit is deterministic: the same request gets the same
// answer on every machine, which a deadline could not promise (and policy
// has no clock). A simple rule costs under ten units and a rule checking
// every one of 100 DNS names about 900, so the limit leaves room for long
// SAN lists while stopping a runaway comprehension after roughly a
// millisecond of work.
const ruleCostLimit = 10_000

// newRuleEnv builds the CEL environment rules compile in.
func newRuleEnv() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[RuleRequest](), ext.ParseStructTags(true)),
		cel.Variable("request", cel.ObjectType("policy.RuleRequest")),
		ext.Strings(),
	)
}

// compileRule type-checks a rule and makes it a program. Compiling once, at
// load time, turns every mistake into a config error rather than a denial.
func compileRule(env *cel.Env, src string) (cel.Program, error) {
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("does not compile:\n%v", iss.Err())
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("is of type %s but must be true or false: compare something, like request.method == \"renew\"", t)
	}
	prg, err := env.Program(ast,
		cel.CostLimit(ruleCostLimit),
		// Constant regular expressions and the like are built now, not
		// on every request.
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return nil, fmt.Errorf("cannot be prepared: %v", err)
	}
	return prg, nil
}

// evalRule runs a compiled rule. Anything but a clean true is a no: an
// error or a cost overrun never lets a request through.
func evalRule(prg cel.Program, in *RuleRequest) (bool, error) {
	out, _, err := prg.Eval(map[string]any{"request": in})
	if err != nil {
		if strings.Contains(err.Error(), "cost limit") {
			return false, fmt.Errorf("it exceeded its cost limit (%d): simplify the rule", ruleCostLimit)
		}
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, errors.New("it did not return a bool")
	}
	return bool(b), nil
}
