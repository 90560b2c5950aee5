package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"sealpost/certs"
)

// Duration is a time.Duration that also reads days and weeks ("5d", "1w"),
// because queue lifetimes are naturally stated in days and Go's parser stops
// at hours.
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return errors.New("empty duration (use e.g. \"30s\", \"15m\", \"5d\")")
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return fmt.Errorf("invalid duration %q (use e.g. \"30s\", \"15m\", \"5d\")", s)
		}
		j := i
		for j < len(rest) && (rest[j] < '0' || rest[j] > '9') && rest[j] != '.' {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		var mult time.Duration
		switch unit {
		case "d":
			mult = 24 * time.Hour
		case "w":
			mult = 7 * 24 * time.Hour
		default:
			part, err := time.ParseDuration(num + unit)
			if err != nil {
				return fmt.Errorf("invalid duration %q (use e.g. \"30s\", \"15m\", \"5d\")", s)
			}
			total += part
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return fmt.Errorf("invalid duration %q", s)
		}
		total += time.Duration(f * float64(mult))
	}
	if total < 0 {
		return fmt.Errorf("negative duration %q", s)
	}
	*d = Duration(total)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a byte count written with a unit ("25MiB", "512KiB", "10MB").
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1},
}

func (z *Size) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q (use e.g. \"25MiB\", \"512KiB\")", s)
	}
	*z = Size(n * mult)
	return nil
}

func (z Size) MarshalText() ([]byte, error) {
	switch {
	case z != 0 && z%(1<<20) == 0:
		return fmt.Appendf(nil, "%dMiB", z>>20), nil
	case z != 0 && z%(1<<10) == 0:
		return fmt.Appendf(nil, "%dKiB", z>>10), nil
	}
	return fmt.Appendf(nil, "%dB", z), nil
}

// Rate is an event rate written as "60/m", "10/s", "1000/h" or "0" for
// unlimited.
type Rate struct {
	Events int
	Per    time.Duration
}

func (r *Rate) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "0" || s == "unlimited" {
		*r = Rate{}
		return nil
	}
	num, per, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if !ok || err != nil || n < 0 {
		return fmt.Errorf("invalid rate %q (use e.g. \"60/m\", \"10/s\", \"1000/h\")", s)
	}
	var d time.Duration
	switch strings.TrimSpace(per) {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	case "d":
		d = 24 * time.Hour
	default:
		return fmt.Errorf("invalid rate %q: the period is s, m, h or d", s)
	}
	*r = Rate{Events: n, Per: d}
	return nil
}

func (r Rate) MarshalText() ([]byte, error) {
	if r.Events == 0 {
		return []byte("0"), nil
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h", 24 * time.Hour: "d"}[r.Per]
	return fmt.Appendf(nil, "%d/%s", r.Events, unit), nil
}

// Unlimited reports whether the rate places no limit.
func (r Rate) Unlimited() bool { return r.Events == 0 }

// Network is an IP prefix in CIDR notation; a bare address means that one host.
type Network struct{ netip.Prefix }

func (n *Network) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return fmt.Errorf("network %q has host bits set (did you mean %q?)", s, p.Masked())
		}
		n.Prefix = p
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("invalid network %q (use CIDR such as \"127.0.0.0/8\" or \"::1/128\")", s)
	}
	n.Prefix = netip.PrefixFrom(a, a.BitLen())
	return nil
}

func (n Network) MarshalText() ([]byte, error) { return []byte(n.Prefix.String()), nil }

// ListenAddr is host:port where host is an IP literal or "localhost".
// Names other than localhost are refused: whether a listener is loopback-only
// must not depend on DNS.
type ListenAddr struct {
	Host string
	Port string
}

func (a *ListenAddr) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("invalid listen address %q (use \"127.0.0.1:25\" or \"[::1]:25\")", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("invalid port in listen address %q", s)
	}
	if host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("listen address %q: the host must be an IP address or localhost", s)
		}
	}
	*a = ListenAddr{Host: host, Port: port}
	return nil
}

func (a ListenAddr) String() string { return net.JoinHostPort(a.Host, a.Port) }

func (a ListenAddr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Loopback reports whether the address only accepts connections from this host.
func (a ListenAddr) Loopback() bool {
	if a.Host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(a.Host)
	return err == nil && ip.IsLoopback()
}

// TLSVersion is a minimum TLS version, "1.2" or "1.3".
type TLSVersion uint16

func (v *TLSVersion) UnmarshalText(b []byte) error {
	parsed, err := certs.ParseTLSVersion(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	*v = TLSVersion(parsed)
	return nil
}

func (v TLSVersion) MarshalText() ([]byte, error) {
	switch v {
	case 0x0304:
		return []byte("1.3"), nil
	default:
		return []byte("1.2"), nil
	}
}
