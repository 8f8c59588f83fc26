// Command modproxy writes one version of a Go module, from a directory of this repository, into
// a module proxy laid out on disk (the GOPROXY protocol's files: <module>/@v/list, .info, .mod,
// .zip), so the release a tag would publish can be installed with GOPROXY=file://<dir> before
// the tag exists.
//
//	modproxy -dir client/go -version v0.1.0 -out dist/goproxy
//
// The zip holds what git would commit (tracked files and new ones it does not ignore), made with
// golang.org/x/mod/zip, the go command's own rules (nested modules, vendor, size limits).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

func main() {
	dir := flag.String("dir", ".", "the module's directory (holding its go.mod)")
	version := flag.String("version", "", "the version to write, e.g. v0.1.0")
	out := flag.String("out", "", "the proxy directory (GOPROXY=file://<out>)")
	stamp := flag.String("time", "", "the version's time, RFC 3339 (default: now)")
	flag.Parse()
	if *version == "" || *out == "" || !semver.IsValid(*version) {
		log.Fatal("usage: modproxy -dir DIR -version vX.Y.Z -out PROXYDIR [-time RFC3339]")
	}
	when := time.Now().UTC()
	if *stamp != "" {
		t, err := time.Parse(time.RFC3339, *stamp)
		if err != nil {
			log.Fatalf("-time: %v", err)
		}
		when = t.UTC()
	}
	if err := write(*dir, *version, *out, when); err != nil {
		log.Fatal(err)
	}
}

func write(dir, version, out string, when time.Time) error {
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	path := modfile.ModulePath(gomod)
	if path == "" {
		return fmt.Errorf("%s/go.mod names no module", dir)
	}
	mv := module.Version{Path: path, Version: version}
	if err := module.Check(path, version); err != nil {
		return err
	}
	escaped, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	vdir := filepath.Join(out, filepath.FromSlash(escaped), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}

	files, err := gitFiles(dir)
	if err != nil {
		return err
	}
	var zipped bytes.Buffer
	if err := modzip.Create(&zipped, mv, files); err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    string
	}{version, when.Format(time.RFC3339)})
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		version + ".zip":  zipped.Bytes(),
		version + ".mod":  gomod,
		version + ".info": append(info, '\n'),
	} {
		if err := os.WriteFile(filepath.Join(vdir, name), data, 0o644); err != nil {
			return err
		}
	}
	return addToList(filepath.Join(vdir, "list"), version)
}

// gitFiles lists what a commit of dir would hold: tracked files and untracked ones git does
// not ignore (build outputs such as bin/ stay out), present on disk.
func gitFiles(dir string) ([]modzip.File, error) {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = dir
	listed, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %w", dir, err)
	}
	var files []modzip.File
	for _, rel := range strings.Split(strings.TrimRight(string(listed), "\x00"), "\x00") {
		if rel == "" {
			continue
		}
		full := filepath.Join(dir, filepath.FromSlash(rel))
		st, err := os.Lstat(full)
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted but not yet committed, or not a file
		}
		files = append(files, dirFile{rel: rel, full: full, info: st})
	}
	return files, nil
}

type dirFile struct {
	rel, full string
	info      os.FileInfo
}

func (f dirFile) Path() string                 { return f.rel }
func (f dirFile) Lstat() (os.FileInfo, error)  { return f.info, nil }
func (f dirFile) Open() (io.ReadCloser, error) { return os.Open(f.full) }

// addToList adds version to the list file, once, in semver order.
func addToList(list, version string) error {
	var versions []string
	if data, err := os.ReadFile(list); err == nil {
		versions = strings.Fields(string(data))
	} else if !os.IsNotExist(err) {
		return err
	}
	if !slices.Contains(versions, version) {
		versions = append(versions, version)
	}
	semver.Sort(versions)
	return os.WriteFile(list, []byte(strings.Join(versions, "\n")+"\n"), 0o644)
}
