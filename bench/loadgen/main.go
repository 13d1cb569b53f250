// loadgen: the portal benchmark's HTTP load generator (bench/portal_bench.py builds and runs it).
//
// A small Go program instead of Python clients, so that the generator takes little of the CPU the
// server is measured on: it reports its own CPU time. Standard library only (nothing to download).
//
// It reads a plan on stdin, one request per line: "KIND<TAB>PATH" (cycled if shorter than the run),
// sends it with "Authorization: Bearer $LOADGEN_TOKEN" (the environment, never argv), reads each body
// whole and prints one JSON object: per kind, the latencies in ms, the non-200 answers and the
// transport errors (counted, never fatal). Client models:
//
//	closed loop (default): -clients N send back to back, no pause: saturation; latency ~ N / throughput
//	think time: -think-ms T: each client pauses an exponential time of mean T between requests
//	open loop: -rate R: requests arrive as a Poisson process of R per second whatever the server does,
//	           latency counted from the planned arrival (no coordinated omission); -clients caps in flight
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type step struct{ kind, path string }

type kindStats struct {
	LatencyMs  []float64   `json:"latency_ms"`
	Status     map[int]int `json:"status"`
	Errors     int         `json:"errors"`
	Bytes      int64       `json:"bytes"`
	FirstError string      `json:"first_error,omitempty"`
}

type result struct {
	Model    string                `json:"model"`
	WallS    float64               `json:"wall_s"`
	CPUUserS float64               `json:"cpu_user_s"`
	CPUSysS  float64               `json:"cpu_sys_s"`
	Kinds    map[string]*kindStats `json:"kinds"`
	Dropped  int64                 `json:"dropped"`
}

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "base URL the plan's paths are appended to")
	clients := flag.Int("clients", 50, "concurrent clients (open loop: most requests in flight)")
	requests := flag.Int("requests", 5000, "requests in all (stops earlier at -seconds)")
	seconds := flag.Float64("seconds", 120, "longest run")
	think := flag.Float64("think-ms", 0, "mean think time between a client's requests (0: closed loop)")
	rate := flag.Float64("rate", 0, "open loop: Poisson arrivals per second (overrides -think-ms)")
	seed := flag.Int64("seed", 5, "random seed (think times, arrivals)")
	flag.Parse()

	var plan []step
	scanner := bufio.NewScanner(os.Stdin)
	for scanner.Scan() {
		kind, path, ok := strings.Cut(scanner.Text(), "\t")
		if ok {
			plan = append(plan, step{kind, path})
		}
	}
	if len(plan) == 0 {
		fmt.Fprintln(os.Stderr, "loadgen: empty plan on stdin")
		os.Exit(2)
	}
	token := os.Getenv("LOADGEN_TOKEN")
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        *clients * 2,
		MaxIdleConnsPerHost: *clients * 2,
		MaxConnsPerHost:     *clients,
		DisableCompression:  true,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: 120 * time.Second}

	res := result{Kinds: map[string]*kindStats{}}
	for _, s := range plan {
		if res.Kinds[s.kind] == nil {
			res.Kinds[s.kind] = &kindStats{Status: map[int]int{}}
		}
	}
	var mu sync.Mutex
	var next int64 = -1
	take := func() (step, bool) {
		i := atomic.AddInt64(&next, 1)
		if i >= int64(*requests) {
			return step{}, false
		}
		return plan[i%int64(len(plan))], true
	}
	start := time.Now()
	deadline := start.Add(time.Duration(*seconds * float64(time.Second)))

	do := func(s step, planned time.Time) {
		req, err := newRequest(*base+s.path, token)
		var status int
		var n int64
		if err == nil {
			var resp *http.Response
			resp, err = client.Do(req)
			if err == nil {
				n, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
		}
		ms := float64(time.Since(planned).Microseconds()) / 1000
		mu.Lock()
		k := res.Kinds[s.kind]
		k.LatencyMs = append(k.LatencyMs, ms)
		k.Bytes += n
		if err != nil {
			k.Errors++
			if k.FirstError == "" {
				k.FirstError = err.Error()
			}
		} else {
			k.Status[status]++
		}
		mu.Unlock()
	}

	var wg sync.WaitGroup
	if *rate > 0 {
		res.Model = fmt.Sprintf("open loop, Poisson %.1f req/s, at most %d in flight", *rate, *clients)
		rng := rand.New(rand.NewSource(*seed))
		slots := make(chan struct{}, *clients)
		at := start
		for time.Now().Before(deadline) {
			s, ok := take()
			if !ok {
				break
			}
			at = at.Add(time.Duration(rng.ExpFloat64() / *rate * float64(time.Second)))
			time.Sleep(time.Until(at))
			select {
			case slots <- struct{}{}:
			default:
				atomic.AddInt64(&res.Dropped, 1) // over the in-flight cap: counted, not sent
				continue
			}
			wg.Add(1)
			go func(s step, planned time.Time) {
				defer wg.Done()
				do(s, planned)
				<-slots
			}(s, at)
		}
	} else {
		res.Model = fmt.Sprintf("closed loop, %d clients, no think time", *clients)
		if *think > 0 {
			res.Model = fmt.Sprintf("closed loop, %d clients, think time exp(mean %.0f ms)", *clients, *think)
		}
		for c := 0; c < *clients; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(*seed + int64(c)))
				if *think > 0 { // clients start spread out, not in one burst
					time.Sleep(time.Duration(rng.Float64() * *think * float64(time.Millisecond)))
				}
				for time.Now().Before(deadline) {
					s, ok := take()
					if !ok {
						return
					}
					do(s, time.Now())
					if *think > 0 {
						time.Sleep(time.Duration(rng.ExpFloat64() * *think * float64(time.Millisecond)))
					}
				}
			}(c)
		}
	}
	wg.Wait()
	res.WallS = time.Since(start).Seconds()
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) == nil {
		res.CPUUserS = float64(usage.Utime.Sec) + float64(usage.Utime.Usec)/1e6
		res.CPUSysS = float64(usage.Stime.Sec) + float64(usage.Stime.Usec)/1e6
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func newRequest(url, token string) (*http.Request, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err == nil && token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, err
}
