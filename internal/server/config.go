package server

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// applyConfigFile fills the flags that neither the command line nor the
// environment set from a YAML file whose keys are the flag names:
//
//	node-id: 1
//	data: /var/lib/kayadb
//	peer:
//	  - 1=10.0.0.5:7481,10.0.0.5:7379
//	  - 2=10.0.0.6:7481,10.0.0.6:7379
//	tls-cert: /etc/kayadb/node1.crt
//
// Precedence is file < environment < command line. An unknown key, a
// list for a single-valued flag or a bad value is an error naming the
// file and line.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config %s: %v", path, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config %s: not valid YAML: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("--config %s: line %d: want a mapping of flag names to values (for example `node-id: 1`)", path, root.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		at := fmt.Sprintf("--config %s: line %d: %s", path, k.Line, name)
		if seen[name] {
			return fmt.Errorf("%s: given twice", at)
		}
		seen[name] = true
		f := fs.Lookup(name)
		if f == nil || name == "config" || name == "help" {
			return fmt.Errorf("%s: no such setting (the keys are kayadb-server's flag names without dashes in front; see kayadb-server --help)", at)
		}
		var values []string
		switch v.Kind {
		case yaml.ScalarNode:
			values = []string{v.Value}
		case yaml.SequenceNode:
			if f.Value.Type() != "stringArray" {
				return fmt.Errorf("%s: takes one value, not a list", at)
			}
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("%s: line %d: list items must be plain values", at, item.Line)
				}
				values = append(values, item.Value)
			}
		default:
			return fmt.Errorf("%s: want a value or a list of values", at)
		}
		if f.Changed {
			continue // the environment or the command line wins
		}
		for _, val := range values {
			if err := f.Value.Set(val); err != nil {
				return fmt.Errorf("%s: %q: %v", at, val, err)
			}
		}
		f.Changed = true
	}
	return nil
}

// configPath is --config, or $KAYA_CONFIG.
func configPath(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) string {
	if f := fs.Lookup("config"); f != nil && f.Changed {
		return f.Value.String()
	}
	if v, ok := lookupEnv("KAYA_CONFIG"); ok {
		return strings.TrimSpace(v)
	}
	return ""
}
