// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library
// behind Flux's health checks and `flux`/`kpt` waits, says about Kubernetes objects.
//
// Usage:
//
//	kubectl get apply NAME -o json | kstatus
//	kstatus FILE...          (a FILE of "-" is stdin)
//	kstatus -version         (the cli-utils version it was built with)
//
// Input is JSON or YAML, one or more objects (a YAML stream, concatenated JSON, or a List as
// `kubectl get -o json` prints for several objects). For each object it prints one JSON line:
//
//	{"apiVersion":"baton.dev/v1alpha1","kind":"Apply","namespace":"ns","name":"a",
//	 "status":"InProgress","message":"...","conditions":[...]}
//
// status is one of Current, InProgress, Failed, Terminating, NotFound, Unknown. When kstatus
// cannot compute a status, the line has "status":"Unknown" and the reason in "error" (as
// kstatus's own poller reports it). Unreadable input exits with 1, bad usage with 2.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

const cliUtils = "sigs.k8s.io/cli-utils"

type line struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Namespace  string             `json:"namespace,omitempty"`
	Name       string             `json:"name"`
	Status     status.Status      `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions,omitempty"`
	Error      string             `json:"error,omitempty"`
}

func main() {
	version := flag.Bool("version", false, "print the "+cliUtils+" version and exit")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [-version] [FILE|-]...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if *version {
		fmt.Println(cliUtilsVersion())
		return
	}
	files := flag.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, file := range files {
		if err := computeFile(file, out); err != nil {
			out.Flush()
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", file, err)
			os.Exit(1)
		}
	}
}

func computeFile(file string, out io.Writer) error {
	var in io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(in, 4096)
	encoder := json.NewEncoder(out)
	for {
		var raw runtime.RawExtension
		err := decoder.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(raw.Raw) == 0 || string(raw.Raw) == "null" {
			continue // an empty YAML document
		}
		// The unstructured JSON scheme keeps integers as int64, as kstatus's
		// readers (client-go) hand them over: a plain json.Unmarshal would give
		// float64 and kstatus would fail to read status.observedGeneration.
		object, err := runtime.Decode(unstructured.UnstructuredJSONScheme, raw.Raw)
		if err != nil {
			return err
		}
		var objects []unstructured.Unstructured
		switch object := object.(type) {
		case *unstructured.Unstructured:
			objects = append(objects, *object)
		case *unstructured.UnstructuredList:
			objects = append(objects, object.Items...)
		default:
			return fmt.Errorf("unexpected object of type %T", object)
		}
		for i := range objects {
			if err := encoder.Encode(compute(&objects[i])); err != nil {
				return err
			}
		}
	}
}

func compute(u *unstructured.Unstructured) line {
	l := line{
		APIVersion: u.GetAPIVersion(),
		Kind:       u.GetKind(),
		Namespace:  u.GetNamespace(),
		Name:       u.GetName(),
	}
	result, err := status.Compute(u)
	if err != nil {
		l.Status = status.UnknownStatus
		l.Error = err.Error()
		return l
	}
	l.Status = result.Status
	l.Message = result.Message
	l.Conditions = result.Conditions
	return l
}

// cliUtilsVersion is the version of the kstatus library linked into this binary.
func cliUtilsVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == cliUtils {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}
