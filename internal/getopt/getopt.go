// Package getopt parses a command line as glibc's getopt_long does, with
// its messages: long options as --name=value or --name value, short ones
// grouped (-c6) with a value attached or next, options and operands in
// any order ("--" ends the options). slirp4netns and pasta parse their
// command lines so, and their callers rely on it.
package getopt

import (
	"fmt"
	"strings"
)

// Spec is a command's options: Long maps each long name to whether it
// takes a value; Short maps a letter to its long name.
type Spec struct {
	Long  map[string]bool
	Short map[byte]string
}

// Parse calls set for each option, in order, with its long name and
// value, and returns the operands. The first error (set's, or a bad
// option's in getopt's words) ends it.
func (s Spec) Parse(args []string, set func(name, val string) error) ([]string, error) {
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return append(operands, args[i+1:]...), nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			needs, known := s.Long[name]
			switch {
			case !known:
				return nil, fmt.Errorf("unrecognized option '--%s'", name)
			case needs && !hasVal:
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			case !needs && hasVal:
				return nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
			}
			if err := set(name, val); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				name, ok := s.Short[a[j]]
				if !ok {
					return nil, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				val := ""
				if s.Long[name] {
					switch {
					case j+1 < len(a):
						val = a[j+1:]
					case i+1 < len(args):
						i++
						val = args[i]
					default:
						return nil, fmt.Errorf("option requires an argument -- '%c'", a[j])
					}
					j = len(a)
				}
				if err := set(name, val); err != nil {
					return nil, err
				}
			}
		default:
			operands = append(operands, a)
		}
	}
	return operands, nil
}
