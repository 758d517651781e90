package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/rotation"
)

// slotStatus is one CA slot as `mica ca status` shows it.
type slotStatus struct {
	ID          int64      `json:"id"`
	Kind        string     `json:"kind"`
	State       string     `json:"state"`
	Subject     string     `json:"subject"`
	SHA256      string     `json:"sha256"`
	Parent      int64      `json:"parent,omitempty"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	PreparedAt  time.Time  `json:"prepared_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
	RemovedAt   *time.Time `json:"removed_at,omitempty"`
	Key         string     `json:"key"`
}

type dueStatus struct {
	Step string    `json:"step"`
	Kind string    `json:"kind"`
	Slot int64     `json:"slot,omitempty"`
	At   time.Time `json:"at"`
	Why  string    `json:"why"`
}

type caStatus struct {
	Slots []slotStatus `json:"slots"`
	Next  []dueStatus  `json:"next"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// runCAStatus shows the CA slots as the database keeps them, and the steps
// the thresholds will take next. It reads the database directly and needs
// no key and no passphrase.
func runCAStatus(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca status")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory (env MICA_DATA_DIR)")
	configPath := fs.String("config", "", "config file (default: mica.yaml in the data directory)")
	db := fs.String("db", env.getenv("MICA_DB"), "postgres:// URL (env MICA_DB; default: the config's, else SQLite in the data directory)")
	output := fs.String("output", "table", "table or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return usageError("--output must be table or json, not %q", *output)
	}
	d := dataPaths{*dataDir}
	if *configPath == "" {
		*configPath = d.config()
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	res, err := cfg.CA.Resolve(maxLeafTTL(cfg.engine()))
	if err != nil {
		return err
	}
	if *db == "" {
		*db = cfg.Database
	}
	st, err := openStore(ctx, *db, d)
	if err != nil {
		return err
	}
	defer st.Close()
	slots, err := st.CASlots(ctx)
	if err != nil {
		return err
	}
	if len(slots) == 0 {
		return fmt.Errorf("the database has no CA slots yet: `mica serve` (or `mica init`) records the data directory's CA on its first start")
	}
	view, err := rotation.SlotsView(ctx, st, slots)
	if err != nil {
		return err
	}
	var out caStatus
	for _, s := range slots {
		c, err := x509.ParseCertificate(s.Cert)
		if err != nil {
			return fmt.Errorf("slot %d: %w", s.ID, err)
		}
		out.Slots = append(out.Slots, slotStatus{ID: s.ID, Kind: string(s.Kind), State: string(s.State), Subject: c.Subject.CommonName,
			SHA256: s.Fingerprint, Parent: s.Parent, NotBefore: s.NotBefore, NotAfter: s.NotAfter, PreparedAt: s.PreparedAt,
			ActivatedAt: optTime(s.ActivatedAt), RetiredAt: optTime(s.RetiredAt), RemovedAt: optTime(s.RemovedAt),
			Key: custody.Ref{URI: s.KeyURI, Sealed: s.KeySealed}.String()})
	}
	for _, d := range rotation.Schedule(view, res.Thresholds) {
		out.Next = append(out.Next, dueStatus{Step: string(d.Step.Action), Kind: string(d.Step.Kind), Slot: d.Step.Slot, At: d.At, Why: d.Step.Why})
	}
	if *output == "json" {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tKIND\tSTATE\tSUBJECT\tNOT AFTER\tSINCE\tKEY")
	for _, s := range out.Slots {
		since := s.PreparedAt
		for _, t := range []*time.Time{s.ActivatedAt, s.RetiredAt, s.RemovedAt} {
			if t != nil {
				since = *t
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Kind, s.State, s.Subject, s.NotAfter.UTC().Format(time.RFC3339),
			since.UTC().Format(time.RFC3339), s.Key)
	}
	tw.Flush()
	fmt.Fprintf(env.stdout, "\nthresholds: prepare at %.0f%% of the active CA's life, activate after %s published, root rollover %s\n",
		res.Thresholds.PrepareAt*100, duration.Format(res.Thresholds.Propagation), map[bool]string{true: "automatic", false: "manual"}[res.Thresholds.AutoRoot])
	for _, d := range out.Next {
		what := d.Kind
		if d.Slot != 0 {
			what = fmt.Sprintf("%s %d", d.Kind, d.Slot)
		}
		fmt.Fprintf(env.stdout, "next: %s %s at %s (%s)\n", d.Step, what, d.At.UTC().Format(time.RFC3339), d.Why)
	}
	return nil
}

// runCARotate forces one rotation step through the API (an administrator
// with ca:rotate; approvals apply as configured).
func runCARotate(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "ca rotate")
	prepare := fs.Bool("prepare", false, "prepare the next CA now and publish it (it activates after its propagation)")
	activate := fs.Bool("activate", false, "activate the prepared CA now, without waiting for its propagation")
	abort := fs.Bool("abort", false, "take the prepared CA out of the bundle before it signs anything")
	root := fs.Bool("root", false, "the root rather than the intermediate")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	step := ""
	for name, set := range map[string]bool{"prepare": *prepare, "activate": *activate, "abort": *abort} {
		if set {
			if step != "" {
				return usageError("ca rotate takes one of --prepare, --activate and --abort")
			}
			step = name
		}
	}
	if step == "" {
		return usageError("ca rotate needs one of --prepare, --activate and --abort")
	}
	if *root {
		step += "-root"
	}
	resp, err := c.Rotate(ctx, step)
	if err != nil {
		return printPending(env, err)
	}
	fmt.Fprintln(env.stdout, resp.Result)
	return nil
}
