// A plain Go net/http server, in both ways a Go server gets its port:
//   - with LISTEN_FDS for this pid (socket activation, `handover = "fds"`): one http.Server per
//     passed descriptor (fd 3, 4, ...), through os.NewFile + net.FileListener;
//   - without (`handover = "bind"`): http.Server{Addr: ":PORT"}.ListenAndServe(), the port from
//     the environment, binding it itself as most Go servers do.
//
// Built static (CGO_ENABLED=0). On SIGTERM it stops accepting, answers the next request of each
// keep-alive connection with `Connection: close`, gives idle connections a short grace to send
// one, then Shutdown() waits for the requests still running and the process exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	pid := os.Getpid()
	var draining atomic.Bool
	var open atomic.Int64 // connections not yet closed
	server := func(addr string) *http.Server {
		return &http.Server{
			Addr:        addr,
			IdleTimeout: 60 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body := fmt.Sprintf("hello from go pid %d\n", pid)
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Header().Set("X-Worker-Pid", strconv.Itoa(pid))
				if draining.Load() {
					w.Header().Set("Connection", "close") // net/http closes the connection after this response
				}
				fmt.Fprint(w, body)
			}),
			ConnState: func(c net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					open.Add(1)
				case http.StateClosed, http.StateHijacked:
					open.Add(-1)
				}
			},
		}
	}
	var servers []*http.Server
	var listeners []net.Listener
	nfds, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if os.Getenv("LISTEN_PID") != strconv.Itoa(pid) {
		nfds = 0
	}
	for i := 0; i < nfds; i++ {
		ln, err := net.FileListener(os.NewFile(uintptr(3+i), "LISTEN_FD_"+strconv.Itoa(3+i)))
		if err != nil {
			log.Fatalf("goserver: fd %d: %v", 3+i, err)
		}
		srv := server("")
		servers = append(servers, srv)
		listeners = append(listeners, ln)
		go srv.Serve(ln)
	}
	if nfds > 0 {
		log.Printf("goserver: pid=%d serving %d socket(s)", pid, nfds)
	} else {
		srv := server(":" + os.Getenv("PORT"))
		servers = append(servers, srv)
		log.Printf("goserver: pid=%d listening on %s", pid, srv.Addr)
		go func() {
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				log.Fatalf("goserver: %v", err)
			}
		}()
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	// Not SetKeepAlivesEnabled(false): it closes idle connections at once, and a request a client
	// is sending on one right then is lost.
	draining.Store(true) // the next response on each connection says Connection: close
	for _, ln := range listeners {
		ln.Close() // this process stops accepting; the socket stays open elsewhere
	}
	// idle keep-alive connections get 1 s to send one last request
	for grace := time.Now().Add(time.Second); open.Load() > 0 && time.Now().Before(grace); {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		srv.Shutdown(ctx) // closes what ListenAndServe bound
	}
	log.Printf("goserver: pid=%d drained", pid)
}
