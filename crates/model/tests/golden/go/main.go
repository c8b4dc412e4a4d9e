// Command golden renders every *.tmpl in the golden directory with Go's own
// text/template, the engine Tinkerbell uses, so Bellows' renderer is checked
// against the real thing rather than against our own expectations.
//
// Options and functions are those of tink-server v0.7-v0.10
// (Option("missingkey=error"); contains/hasPrefix/hasSuffix from Go's
// strings package; formatPartition as tink defines it).
//
// Usage: go run main.go <golden-dir>
// Reads <dir>/context.json (written by the Rust test) and writes, per case,
// NAME.out (rendered text) or NAME.err (Go's error message).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

func formatPartition(dev string, partition int) string {
	switch {
	case strings.HasPrefix(dev, "/dev/nvme"):
		return fmt.Sprintf("%vp%v", dev, partition)
	case strings.HasPrefix(dev, "/dev/sd"), strings.HasPrefix(dev, "/dev/vd"),
		strings.HasPrefix(dev, "/dev/xvd"), strings.HasPrefix(dev, "/dev/hd"):
		return fmt.Sprintf("%v%v", dev, partition)
	}
	return dev
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: golden <dir>")
		os.Exit(2)
	}
	dir := os.Args[1]
	raw, err := os.ReadFile(filepath.Join(dir, "context.json"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var data map[string]interface{}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	funcs := template.FuncMap{
		"contains":        strings.Contains,
		"hasPrefix":       strings.HasPrefix,
		"hasSuffix":       strings.HasSuffix,
		"formatPartition": formatPartition,
	}
	cases, _ := filepath.Glob(filepath.Join(dir, "*.tmpl"))
	sort.Strings(cases)
	for _, c := range cases {
		base := strings.TrimSuffix(c, ".tmpl")
		os.Remove(base + ".out")
		os.Remove(base + ".err")
		src, err := os.ReadFile(c)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var out strings.Builder
		t, err := template.New("workflow-template").Option("missingkey=error").Funcs(funcs).Parse(string(src))
		if err == nil {
			err = t.Execute(&out, data)
		}
		if err != nil {
			os.WriteFile(base+".err", []byte(err.Error()+"\n"), 0o644)
			continue
		}
		os.WriteFile(base+".out", []byte(out.String()), 0o644)
	}
}
