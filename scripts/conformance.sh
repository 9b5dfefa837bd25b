#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite against a freshly started
# `mlambda registry serve`, and prints the suite's pass/fail summary.
#
#   scripts/conformance.sh SUITE_DIR [MLAMBDA_BINARY]
#
# SUITE_DIR holds the suite's Go sources: the `conformance/` folder of
# https://github.com/opencontainers/distribution-spec at the wanted ref, e.g.
#   git clone --depth 1 --branch v1.1.1 https://github.com/opencontainers/distribution-spec
#   scripts/conformance.sh distribution-spec/conformance
# This script never downloads anything (the suite's sources are third-party code and
# are never committed here). MLAMBDA_BINARY defaults to
# ${CARGO_TARGET_DIR:-target}/debug/mlambda.
#
# Two layouts of the suite are known:
# - the ginkgo suite of the v1.x releases (00_conformance_suite_test.go, setup.go, ...):
#   built with `go test -c`. When its Go modules cannot be fetched (no network, or a Go
#   older than its go.mod wants, as Debian 12's Go 1.19 with no ginkgo v2 package), it is
#   built offline in GOPATH mode from Debian's packages instead:
#     apt-get install golang-go golang-github-onsi-ginkgo-dev golang-gomega-dev \
#       golang-github-opencontainers-go-digest-dev golang-github-google-uuid-dev \
#       golang-github-go-resty-resty-dev golang-golang-x-net-dev
#   with three substitutes written below: ginkgo v1 in place of v2 (the suite only uses
#   Describe/Context/Specify/Skip, which v1 has), a small HTTP client with the API of
#   github.com/bloodorangeio/reggie (not packaged by Debian), and a plain-text reporter in
#   place of reporter.go (HTML report). The tests themselves are compiled unchanged.
# - the newer suite of the main branch (main.go, config.go, run.go, api.go, state.go, ...):
#   a plain program built with `go build`, configured by environment (OCI_REGISTRY, OCI_TLS,
#   OCI_REPO1/2, OCI_RESULTS_DIR, OCI_VERSION, OCI_API_*, OCI_DATA_*: see its config.go),
#   printing its own summary. It wants Go >= 1.24 and the modules github.com/goccy/go-yaml,
#   image-spec 1.1 and the spec's specs-go. If a Go >= 1.24 builds it from the module cache
#   (GOPROXY=off), it is built as is; otherwise (Debian 12, no network) it is built offline:
#     echo 'deb http://deb.debian.org/debian bookworm-backports main' \
#         >/etc/apt/sources.list.d/backports.list && apt-get update
#     apt-get install -t bookworm-backports golang-1.23-go
#     apt-get install golang-github-goccy-go-yaml-dev golang-github-opencontainers-image-spec-dev \
#       golang-github-opencontainers-go-digest-dev golang-github-fatih-color-dev \
#       golang-github-mattn-go-colorable-dev golang-github-mattn-go-isatty-dev \
#       golang-golang-x-sys-dev golang-golang-x-xerrors-dev
#   with that Go (/usr/lib/go-1.23/bin/go is found by itself), GOPROXY=off GOTOOLCHAIN=local
#   GOFLAGS=-mod=mod and a go.mod whose `replace` lines point at Debian's
#   /usr/share/gocode/src, and these substitutes, all in the scratch copy:
#     * crypto/rand.Text and strings.SplitSeq (Go 1.24): two small functions in the same
#       package (randText, splitSeq), the calls pointed at them;
#     * Debian's image-spec 1.1.0~rc2, copied with the 1.1.0 fields the suite uses added
#       (artifactType of manifest and index, subject of index, Platform embedded in Image);
#     * the go.mod of go-yaml (its old one lists test-only modules) and of fatih/color
#       (which has none) reduced to what the build uses;
#     * specs-go from ../specs-go next to the suite if the checkout has it, else a stand-in
#       with the one type the suite uses (TagList).
#   The tests themselves are compiled unchanged. By default every API and data category is
#   on (OCI_VERSION=1.1+dev and each OCI_API_*/OCI_DATA_* switch, sparse manifests
#   included); ALL_CATEGORIES=0 runs the suite's own defaults, and any OCI_* setting
#   already in the environment wins.
#
# Environment: REGISTRY_PORT=N runs the suite against a registry already listening on
# 127.0.0.1:N instead of starting mlambda (to compare with another registry),
# OCI_AUTOMATIC_CROSSMOUNT (default 1: our server also mounts without `from`),
# OCI_DEBUG=1 for request logs, KEEP=1 to keep the scratch directory,
# MLAMBDA_SERVE_ARGS for more flags of `registry serve` (e.g. "--immutable-tags
# --allow-delete-immutable": the suite deletes the tags it pushed).
set -euo pipefail

suite=$(cd "${1:?usage: $0 SUITE_DIR [MLAMBDA_BINARY]}" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
mlambda=${2:-${CARGO_TARGET_DIR:-$repo/target}/debug/mlambda}
[ -n "${REGISTRY_PORT:-}" ] || [ -x "$mlambda" ] || { echo "no mlambda binary at $mlambda (cargo build first)" >&2; exit 2; }
command -v go >/dev/null || { echo "needs Go (apt-get install golang-go)" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ "${KEEP:-0}" = 1 ] && echo "scratch kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: bind port 0, read what the OS gave, release it.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_server() {
    local port=$1
    mkdir -p "$work/registry"
    # MLAMBDA_SERVE_ARGS: more flags, e.g. "--immutable-tags --allow-delete-immutable"
    # shellcheck disable=SC2086
    "$mlambda" registry serve --root "$work/registry" --addr "127.0.0.1:$port" ${MLAMBDA_SERVE_ARGS:-} \
        >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && return 0
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

# --- substitutes for the offline build of the ginkgo suite ---------------------------

write_reggie() {
    local dir=$1/src/github.com/bloodorangeio/reggie
    mkdir -p "$dir"
    cat >"$dir/reggie.go" <<'EOF'
// Package reggie is a minimal stand-in for github.com/bloodorangeio/reggie with the
// part of its API the conformance suite uses, written for mlambda's conformance.sh.
package reggie

import (
	"crypto/tls"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/go-resty/resty/v2"
)

const (
	GET     = resty.MethodGet
	PUT     = resty.MethodPut
	PATCH   = resty.MethodPatch
	DELETE  = resty.MethodDelete
	POST    = resty.MethodPost
	HEAD    = resty.MethodHead
	OPTIONS = resty.MethodOptions
)

type Config struct {
	Address, DefaultName, Username, Password, UserAgent, AuthScope string
	Debug, Insecure                                                bool
}

type Client struct {
	*resty.Client
	Config *Config
}

type clientOption func(*Config)

func WithDefaultName(v string) clientOption  { return func(c *Config) { c.DefaultName = v } }
func WithUserAgent(v string) clientOption    { return func(c *Config) { c.UserAgent = v } }
func WithAuthScope(v string) clientOption    { return func(c *Config) { c.AuthScope = v } }
func WithDebug(v bool) clientOption          { return func(c *Config) { c.Debug = v } }
func WithInsecureSkipTLSVerify(v bool) clientOption {
	return func(c *Config) { c.Insecure = v }
}
func WithUsernamePassword(u, p string) clientOption {
	return func(c *Config) { c.Username, c.Password = u, p }
}

func NewClient(address string, opts ...clientOption) (*Client, error) {
	cfg := &Config{Address: strings.TrimSuffix(address, "/")}
	for _, o := range opts {
		o(cfg)
	}
	rc := resty.New().SetDebug(cfg.Debug)
	if cfg.Insecure {
		rc.SetTLSClientConfig(&tls.Config{InsecureSkipVerify: true})
	}
	if cfg.Username != "" {
		rc.SetBasicAuth(cfg.Username, cfg.Password)
	}
	return &Client{Client: rc, Config: cfg}, nil
}

type requestConfig struct{ name, reference, digest, sessionID string }

type requestOption func(*requestConfig)

func WithName(v string) requestOption      { return func(r *requestConfig) { r.name = v } }
func WithReference(v string) requestOption { return func(r *requestConfig) { r.reference = v } }
func WithDigest(v string) requestOption    { return func(r *requestConfig) { r.digest = v } }
func WithSessionID(v string) requestOption { return func(r *requestConfig) { r.sessionID = v } }

type Request struct{ *resty.Request }

func (c *Client) NewRequest(method, path string, opts ...requestOption) *Request {
	rc := requestConfig{name: c.Config.DefaultName}
	for _, o := range opts {
		o(&rc)
	}
	path = strings.NewReplacer("<name>", rc.name, "<reference>", rc.reference,
		"<digest>", rc.digest, "<session_id>", rc.sessionID).Replace(path)
	req := c.Client.R()
	req.Method = method
	req.URL = c.Config.Address + path
	if c.Config.UserAgent != "" {
		req.SetHeader("User-Agent", c.Config.UserAgent)
	}
	return &Request{req}
}

func (r *Request) SetHeader(k, v string) *Request     { r.Request.SetHeader(k, v); return r }
func (r *Request) SetQueryParam(k, v string) *Request { r.Request.SetQueryParam(k, v); return r }
func (r *Request) SetBody(b interface{}) *Request     { r.Request.SetBody(b); return r }

func (c *Client) Do(req *Request) (*Response, error) {
	resp, err := req.Request.Execute(req.Method, req.URL)
	if err != nil {
		return nil, err
	}
	return &Response{resp}, nil
}

type Response struct{ *resty.Response }

// GetRelativeLocation is the Location header's path and query.
func (r *Response) GetRelativeLocation() string {
	u, err := url.Parse(r.Header().Get("Location"))
	if err != nil {
		return ""
	}
	p := u.Path
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return p
}

// GetAbsoluteLocation is the Location header resolved against the request's URL.
func (r *Response) GetAbsoluteLocation() string {
	loc := r.Header().Get("Location")
	u, err := url.Parse(loc)
	if err != nil || loc == "" {
		return ""
	}
	base, err := url.Parse(r.Response.Request.URL)
	if err != nil {
		return loc
	}
	return base.ResolveReference(u).String()
}

type ErrorInfo struct {
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Detail  interface{} `json:"detail"`
}

func (r *Response) Errors() ([]ErrorInfo, error) {
	var body struct {
		Errors []ErrorInfo `json:"errors"`
	}
	if err := json.Unmarshal(r.Body(), &body); err != nil {
		return nil, err
	}
	return body.Errors, nil
}

func (r *Response) IsUnauthorized() bool { return r.StatusCode() == 401 }
EOF
}

write_ginkgo_v1_glue() {
    local pkg=$1
    # ginkgo v1 in place of v2; v2's formatter only colours warnings.
    sed -i -e 's#"github.com/onsi/ginkgo/v2"#"github.com/onsi/ginkgo"#' \
        -e '\#"github.com/onsi/ginkgo/v2/formatter"#d' \
        -e 's#formatter\.Fi(2, #formatterFi(#g' "$pkg"/*.go
    rm -f "$pkg/00_conformance_suite_test.go" "$pkg/reporter.go"
    cat >"$pkg/zz_mlambda_suite_test.go" <<'EOF'
package conformance

import (
	"testing"

	g "github.com/onsi/ginkgo"
	. "github.com/onsi/gomega"
)

func TestConformance(t *testing.T) {
	g.Describe(suiteDescription, func() {
		test01Pull()
		test02Push()
		test03ContentDiscovery()
		test04ContentManagement()
	})
	RegisterFailHandler(g.Fail)
	g.RunSpecs(t, suiteDescription)
}
EOF
    cat >"$pkg/zz_mlambda_reporter.go" <<'EOF'
package conformance

import (
	"fmt"
	"os"
)

// httpDebugWriter shows the HTTP exchanges only with OCI_DEBUG.
type httpDebugWriter struct{ debug bool }

func newHTTPDebugWriter(debug bool) *httpDebugWriter { return &httpDebugWriter{debug: debug} }

func (w *httpDebugWriter) Write(b []byte) (int, error) {
	if w.debug {
		return os.Stderr.Write(b)
	}
	return len(b), nil
}

type httpDebugLogger struct{ w *httpDebugWriter }

func newHTTPDebugLogger(w *httpDebugWriter) *httpDebugLogger { return &httpDebugLogger{w: w} }

func (l *httpDebugLogger) Errorf(format string, v ...interface{}) { fmt.Fprintf(l.w, format+"\n", v...) }
func (l *httpDebugLogger) Warnf(format string, v ...interface{})  { fmt.Fprintf(l.w, format+"\n", v...) }
func (l *httpDebugLogger) Debugf(format string, v ...interface{}) { fmt.Fprintf(l.w, format+"\n", v...) }

func formatterFi(format string, args ...interface{}) string { return fmt.Sprintf(format, args...) }
EOF
}

build_ginkgo_offline() {
    local gopath=$work/gopath pkg=$work/gopath/src/conformance
    mkdir -p "$pkg" "$gopath/src/github.com/go-resty/resty"
    cp "$suite"/*.go "$pkg/"
    ln -s /usr/share/gocode/src/github.com/go-resty/resty "$gopath/src/github.com/go-resty/resty/v2"
    write_reggie "$gopath"
    write_ginkgo_v1_glue "$pkg"
    (cd "$pkg" && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= \
        go test -c -o "$work/conformance.test" .)
}

build_ginkgo() {
    mkdir -p "$work/src"
    cp -r "$suite"/. "$work/src/"
    if (cd "$work/src" && go test -c -o "$work/conformance.test" . ) 2>"$work/build.log"; then
        return 0
    fi
    echo "module build failed ($(tail -1 "$work/build.log")); building offline from Debian's packages"
    build_ginkgo_offline
}

run_ginkgo() {
    local port=$1
    (
        cd "$work"
        export OCI_ROOT_URL="http://127.0.0.1:$port" OCI_NAMESPACE=conformance/repo1 \
            OCI_CROSSMOUNT_NAMESPACE=conformance/repo2 OCI_TEST_PULL=1 OCI_TEST_PUSH=1 \
            OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 \
            OCI_AUTOMATIC_CROSSMOUNT=${OCI_AUTOMATIC_CROSSMOUNT:-1} OCI_REPORT_DIR="$work" \
            ACK_GINKGO_DEPRECATIONS=1.16.5 ACK_GINKGO_RC=true
        ./conformance.test -ginkgo.noColor 2>&1 | tee "$work/suite.log" || true
    )
    echo "== summary"
    grep -E '^\[Fail\]|Ran [0-9]+ of [0-9]+ Specs|Passed \|' "$work/suite.log" || true
    grep -q '^SUCCESS!' "$work/suite.log"
}

# --- the newer suite (main branch) ---------------------------------------------------

# The Go to build the main-branch suite with: `go` if it is >= 1.24, else the newest
# Debian backports Go >= 1.23 (/usr/lib/go-1.2x), which needs the two substitutes below.
find_go_for_main() {
    local candidate version minor best='' best_minor=0
    for candidate in "$(command -v go || true)" /usr/lib/go-1.*/bin/go; do
        [ -x "$candidate" ] || continue
        version=$("$candidate" env GOVERSION 2>/dev/null) || continue
        minor=$(echo "$version" | sed -E 's/^go1\.([0-9]+).*/\1/')
        if [ "$minor" -gt "$best_minor" ] 2>/dev/null; then
            best=$candidate best_minor=$minor
        fi
    done
    if [ "$best_minor" -lt 23 ]; then
        echo "the main-branch suite needs Go >= 1.23 (>= 1.24 without substitutes):" \
            "apt-get install -t bookworm-backports golang-1.23-go" >&2
        exit 2
    fi
    go_main=$best go_main_minor=$best_minor
}

# Go 1.24's crypto/rand.Text and strings.SplitSeq, for a Go 1.23 build: the calls in the
# suite are pointed at these.
write_go124_substitutes() {
    local src=$1
    sed -i -e 's/rand\.Text()/randText()/g' -e 's/strings\.SplitSeq(/splitSeq(/g' "$src"/*.go
    cat >"$src/zz_mlambda_go124.go" <<'GO'
package main

// Substitutes for two Go 1.24 APIs, written by mlambda's scripts/conformance.sh.

import (
	"crypto/rand"
	"encoding/base32"
	"iter"
	"strings"
)

// randText is crypto/rand.Text: 26 characters of the base32 alphabet, 130 random bits.
func randText() string {
	b := make([]byte, 17)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base32.StdEncoding.EncodeToString(b)[:26]
}

// splitSeq is strings.SplitSeq: the substrings of s around sep, as an iterator.
func splitSeq(s, sep string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, p := range strings.Split(s, sep) {
			if !yield(p) {
				return
			}
		}
	}
}
GO
}

# Edits Debian's image-spec 1.1.0~rc2 (a copy) to have the 1.1.0 fields the suite uses:
# artifactType of manifest and index, subject of index, Platform embedded in Image.
patch_image_spec() {
    python3 - "$1/specs-go/v1" <<'PY'
import re, sys
d = sys.argv[1]
def edit(name, fn):
    p = f"{d}/{name}"
    s = open(p).read()
    t = fn(s)
    if t != s:
        open(p, "w").write(t)
media = '\tMediaType string `json:"mediaType,omitempty"`\n'
artifact = media + '\n\tArtifactType string `json:"artifactType,omitempty"`\n'
def index(s):
    if "ArtifactType" in s:
        return s
    s = s.replace(media, artifact, 1)
    many = '\tManifests []Descriptor `json:"manifests"`\n'
    return s.replace(many, many + '\n\tSubject *Descriptor `json:"subject,omitempty"`\n', 1)
def manifest(s):
    return s if "ArtifactType" in s else s.replace(media, artifact, 1)
def config(s):
    m = re.search(r"type Image struct \{.*?\n\}", s, re.S)
    if not m or "Architecture string" not in m.group(0):
        return s
    fields = r"(\n\t//[^\n]*)*\n\t(Architecture|Variant|OS|OSVersion|OSFeatures) [^\n]*"
    block = re.sub(fields, "", m.group(0))
    author = '\tAuthor string `json:"author,omitempty"`\n'
    block = block.replace(author, author + "\n\tPlatform\n", 1)
    return s[:m.start()] + block + s[m.end():]
edit("index.go", index)
edit("manifest.go", manifest)
edit("config.go", config)
PY
}

# The suite's modules from Debian's packages, copied where they need a change (see the
# header): image-spec patched, go.mod of go-yaml and fatih/color trimmed, specs-go from the
# checkout or a stand-in.
prepare_main_modules() {
    local deps=$1 gocode=/usr/share/gocode/src
    mkdir -p "$deps"
    cp -r "$gocode/github.com/opencontainers/image-spec" "$deps/image-spec"
    printf 'module github.com/opencontainers/image-spec\n\ngo 1.17\n\nrequire github.com/opencontainers/go-digest v1.0.0\n' \
        >"$deps/image-spec/go.mod"
    rm -f "$deps/image-spec/go.sum"
    patch_image_spec "$deps/image-spec"
    cp -r "$gocode/github.com/goccy/go-yaml" "$deps/go-yaml"
    rm -f "$deps/go-yaml/go.sum"
    printf 'module github.com/goccy/go-yaml\n\ngo 1.17\n\nrequire (\n\tgithub.com/fatih/color v1.10.0\n\tgolang.org/x/xerrors v0.0.0-20200804184101-5ec99f83aff1\n)\n' \
        >"$deps/go-yaml/go.mod"
    cp -r "$gocode/github.com/fatih/color" "$deps/color"
    printf 'module github.com/fatih/color\n\ngo 1.13\n\nrequire (\n\tgithub.com/mattn/go-colorable v0.1.8\n\tgithub.com/mattn/go-isatty v0.0.16\n)\n' \
        >"$deps/color/go.mod"
    if [ -d "$suite/../specs-go/v1" ]; then
        cp -r "$suite/../specs-go" "$deps/specs-go"
    else
        mkdir -p "$deps/specs-go/v1"
        printf 'module github.com/opencontainers/distribution-spec/specs-go\n\ngo 1.18\n' \
            >"$deps/specs-go/go.mod"
        cat >"$deps/specs-go/v1/tags.go" <<'GO'
// Package v1 stands in for github.com/opencontainers/distribution-spec/specs-go/v1 with
// the one type the conformance suite uses (written by mlambda's scripts/conformance.sh).
package v1

// TagList is the body of GET /v2/<name>/tags/list.
type TagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}
GO
    fi
}

build_main() {
    local src=$work/src deps=$work/deps gocode=/usr/share/gocode/src
    mkdir -p "$src"
    cp -r "$suite"/. "$src/"
    export GOPROXY=off GOTOOLCHAIN=local GOSUMDB=off GOCACHE=${GOCACHE:-$work/gocache}
    # With the suite's modules already in the module cache, its own go.mod builds as is.
    if [ "$go_main_minor" -ge 24 ] &&
        (cd "$src" && "$go_main" build -o "$work/conformance" .) 2>"$work/build.log"; then
        return 0
    fi
    echo "building the main-branch suite offline with $("$go_main" env GOVERSION) and Debian's packages"
    if [ "$go_main_minor" -lt 24 ]; then
        write_go124_substitutes "$src"
    fi
    prepare_main_modules "$deps"
    cat >"$src/go.mod" <<GOMOD
module github.com/opencontainers/distribution-spec/conformance

go 1.$go_main_minor

require (
	github.com/goccy/go-yaml v1.9.5
	github.com/opencontainers/distribution-spec/specs-go v0.0.0
	github.com/opencontainers/go-digest v1.0.0
	github.com/opencontainers/image-spec v1.1.0
)

replace (
	github.com/goccy/go-yaml => $deps/go-yaml
	github.com/opencontainers/distribution-spec/specs-go => $deps/specs-go
	github.com/opencontainers/go-digest => $gocode/github.com/opencontainers/go-digest
	github.com/opencontainers/image-spec => $deps/image-spec
	github.com/fatih/color => $deps/color
	github.com/mattn/go-colorable => $gocode/github.com/mattn/go-colorable
	github.com/mattn/go-isatty => $gocode/github.com/mattn/go-isatty
	golang.org/x/sys => $gocode/golang.org/x/sys
	golang.org/x/xerrors => $gocode/golang.org/x/xerrors
)
GOMOD
    rm -f "$src/go.sum"
    (cd "$src" && GOFLAGS=-mod=mod "$go_main" build -o "$work/conformance" .)
}

# Every API and data category: version 1.1+dev turns on upload cancel, digest headers and
# tag parameters; the rest are switched on one by one (sparse manifests are off by default).
all_categories=(OCI_API_PING OCI_API_PULL OCI_API_PUSH OCI_API_BLOBS_ATOMIC
    OCI_API_BLOBS_DELETE OCI_API_BLOBS_DIGEST_HEADER OCI_API_BLOBS_MOUNT_ANONYMOUS
    OCI_API_BLOBS_UPLOAD_CANCEL OCI_API_MANIFESTS_ATOMIC OCI_API_MANIFESTS_DELETE
    OCI_API_MANIFESTS_DIGEST_HEADER OCI_API_MANIFESTS_TAG_PARAM OCI_API_TAGS_ATOMIC
    OCI_API_TAGS_DELETE OCI_API_TAGS_LIST OCI_API_REFERRER OCI_DATA_IMAGE OCI_DATA_INDEX
    OCI_DATA_INDEX_LIST OCI_DATA_SPARSE OCI_DATA_ARTIFACT OCI_DATA_SUBJECT
    OCI_DATA_SUBJECT_MISSING OCI_DATA_ARTIFACT_LIST OCI_DATA_SUBJECT_LIST OCI_DATA_DATA_FIELD
    OCI_DATA_NONDISTRIBUTABLE OCI_DATA_CUSTOM_FIELDS OCI_DATA_NO_LAYERS OCI_DATA_EMPTY_BLOB
    OCI_DATA_SHA512)

run_main() {
    local port=$1 status=0 v
    (
        cd "$work"
        export OCI_REGISTRY="127.0.0.1:$port" OCI_TLS=disabled OCI_RESULTS_DIR="$work/results"
        export OCI_REPO1=${OCI_REPO1:-conformance/repo1} OCI_REPO2=${OCI_REPO2:-conformance/repo2}
        if [ "${ALL_CATEGORIES:-1}" = 1 ]; then
            # a setting already in the environment wins
            export OCI_VERSION=${OCI_VERSION:-1.1+dev}
            for v in "${all_categories[@]}"; do
                [ -n "${!v:-}" ] || export "$v=true"
            done
        fi
        ./conformance >"$work/suite.log" 2>"$work/suite.err"
    ) || status=$?
    echo "== failures"
    grep -B1 '^ *- ' "$work/suite.log" | grep -v '^--' || true
    echo "== summary"
    sed -n '/^OCI Conformance Result/,/^ *Total/p' "$work/suite.log"
    echo "(full report in $work/suite.log and $work/results; KEEP=1 keeps them)"
    return "$status"
}

if [ -f "$suite/main.go" ]; then
    find_go_for_main
fi
if [ -n "${REGISTRY_PORT:-}" ]; then
    port=$REGISTRY_PORT
else
    port=$(free_port)
    start_server "$port"
fi
if [ -f "$suite/main.go" ]; then
    build_main
    run_main "$port"
else
    build_ginkgo
    run_ginkgo "$port"
fi
