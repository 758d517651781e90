// Package workloadapi serves the SPIFFE Workload API (gRPC on a unix socket)
// from what the agent holds: X509-SVIDs and bundles as streams that push on
// every change, JWT-SVIDs fetched from the server for the caller's
// audience, JWT bundles, and JWT-SVID validation.
//
// It is an adapter: it translates between the agent's state and the
// Workload API's protobuf messages and gRPC status codes. Which process may
// have which identity is each SVID's Entitlement (entitle.go), judged on the
// caller's uid and gid that the kernel reports for the socket (SO_PEERCRED,
// peer.go).
// Start reading at New; Config says what it serves from.
package workloadapi

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// X509SVID is one identity the API hands out, and to whom.
type X509SVID struct {
	ID          spiffeid.ID
	Chain       []*x509.Certificate // leaf first
	Key         crypto.Signer
	Entitlement Entitlement // the local processes that may have it
}

// Snapshot is everything the API serves at one moment.
type Snapshot struct {
	SVIDs       []X509SVID
	TrustDomain spiffeid.TrustDomain
	Roots       []*x509.Certificate
	JWTBundle   []byte // JWKS JSON; nil when not known yet
}

// Config says where the API gets what it serves. Both fields are required.
type Config struct {
	// Snapshot returns what to serve now and a channel closed at the next
	// change; streams wait on it to push rotations.
	Snapshot func() (Snapshot, <-chan struct{})
	// FetchJWTSVID returns a JWT-SVID for id with the given audience.
	FetchJWTSVID func(ctx context.Context, id spiffeid.ID, audience []string) (string, error)
	Logger       *slog.Logger
}

// Server is the Workload API.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	cfg Config
	log *slog.Logger
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Snapshot == nil || cfg.FetchJWTSVID == nil {
		return nil, errors.New("workloadapi: Snapshot and FetchJWTSVID are required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Listen makes the unix socket at path (replacing a stale one). The socket
// is made 0777 on purpose: any local process may ask, as the Workload API
// intends, and Entitled decides what each gets; restrict the directory to
// restrict who may ask at all.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("workloadapi: creating the socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("workloadapi: removing the old socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workloadapi: cannot listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		ln.Close()
		return nil, fmt.Errorf("workloadapi: %w", err)
	}
	return ln, nil
}

// Serve serves the API on ln (from Listen) until ctx ends, then closes it.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	g := grpc.NewServer(grpc.Creds(peerCreds{}))
	workload.RegisterSpiffeWorkloadAPIServer(g, s)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("workloadapi: %w", err)
	case <-ctx.Done():
		// Stop, not GracefulStop: streams never end on their own.
		g.Stop()
		return nil
	}
}

// checkHeader enforces the spec's guard against server-side request
// forgery: every call must carry "workload.spiffe.io: true".
func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// FetchX509SVID streams the SVIDs now and after every rotation.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	first := true
	return s.push(ctx, func(snap Snapshot) error {
		snap.SVIDs = s.visible(ctx, snap.SVIDs)
		if len(snap.SVIDs) == 0 {
			if first {
				// As the spec asks: a caller with no identity is told so,
				// and its client retries later.
				return status.Error(codes.PermissionDenied, "no identity issued")
			}
			return nil
		}
		first = false
		resp := &workload.X509SVIDResponse{}
		bundle := concatDER(snap.Roots)
		for _, sv := range snap.SVIDs {
			key, err := x509.MarshalPKCS8PrivateKey(sv.Key)
			if err != nil {
				return status.Errorf(codes.Internal, "workloadapi: encoding the SVID key: %v", err)
			}
			resp.Svids = append(resp.Svids, &workload.X509SVID{
				SpiffeId: sv.ID.String(), X509Svid: concatDER(sv.Chain), X509SvidKey: key, Bundle: bundle,
			})
		}
		return stream.Send(resp)
	})
}

// FetchX509Bundles streams the trust bundle now and whenever it changes.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	var last []byte
	return s.push(ctx, func(snap Snapshot) error {
		b := concatDER(snap.Roots)
		if len(b) == 0 || string(b) == string(last) {
			return nil
		}
		last = b
		return stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{snap.TrustDomain.IDString(): b}})
	})
}

// FetchJWTBundles streams the JWT-SVID keys now and whenever they change.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	ctx := stream.Context()
	if err := checkHeader(ctx); err != nil {
		return err
	}
	var last []byte
	return s.push(ctx, func(snap Snapshot) error {
		if snap.JWTBundle == nil || string(snap.JWTBundle) == string(last) {
			return nil
		}
		last = snap.JWTBundle
		return stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{snap.TrustDomain.IDString(): snap.JWTBundle}})
	})
}

// push calls send with the current snapshot and again after every change
// until the stream ends.
func (s *Server) push(ctx context.Context, send func(Snapshot) error) error {
	for {
		snap, changed := s.cfg.Snapshot()
		if err := send(snap); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// FetchJWTSVID returns a JWT-SVID for each identity (or the one asked for)
// with the requested audience.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	snap, _ := s.cfg.Snapshot()
	resp := &workload.JWTSVIDResponse{}
	for _, sv := range s.visible(ctx, snap.SVIDs) {
		if req.GetSpiffeId() != "" && req.GetSpiffeId() != sv.ID.String() {
			continue
		}
		tok, err := s.cfg.FetchJWTSVID(ctx, sv.ID, req.GetAudience())
		if err != nil {
			s.log.Warn("fetching a JWT-SVID failed", slog.String("identity", sv.ID.String()), slog.String("error", err.Error()))
			return nil, status.Errorf(codes.Unavailable, "workloadapi: the server did not issue a JWT-SVID: %v", err)
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: sv.ID.String(), Svid: tok})
	}
	if len(resp.Svids) == 0 {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return resp, nil
}

// ValidateJWTSVID checks a JWT-SVID's signature against the JWT bundle and
// its audience, expiry and subject, with go-spiffe's validator.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if req.GetAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.GetSvid() == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	snap, _ := s.cfg.Snapshot()
	if snap.JWTBundle == nil {
		return nil, status.Error(codes.Unavailable, "workloadapi: the JWT bundle has not been fetched from the server yet; retry shortly")
	}
	bundle, err := jwtbundle.Parse(snap.TrustDomain, snap.JWTBundle)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "workloadapi: the JWT bundle from the server is unusable: %v", err)
	}
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), bundle, []string{req.GetAudience()})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "workloadapi: encoding claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// visible keeps the SVIDs the caller is entitled to.
func (s *Server) visible(ctx context.Context, svids []X509SVID) []X509SVID {
	c, known := callerOf(ctx)
	var out []X509SVID
	for _, sv := range svids {
		if sv.Entitlement.Allows(c, known) {
			out = append(out, sv)
		}
	}
	return out
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
