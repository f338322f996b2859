// A plain Go net/http server that binds its own port, as most Go servers do:
// http.Server{Addr: ":PORT"}.ListenAndServe() (the port from the environment), no socket
// activation. Built static (CGO_ENABLED=0). On SIGTERM the next response of each keep-alive
// connection says `Connection: close`, idle connections get a short grace to send one, then
// Shutdown() closes the listener, waits for the requests still running and the process exits 0.
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
	srv := &http.Server{
		Addr:        ":" + os.Getenv("PORT"),
		IdleTimeout: 60 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := fmt.Sprintf("hello from go pid %d\n", pid)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Header().Set("X-Worker-Pid", strconv.Itoa(pid))
			if draining.Load() {
				w.Header().Set("Connection", "close")
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
	done := make(chan struct{})
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		draining.Store(true)
		// idle keep-alive connections get 1 s to send one last request
		for grace := time.Now().Add(time.Second); open.Load() > 0 && time.Now().Before(grace); {
			time.Sleep(10 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()
	log.Printf("gobind: pid=%d listening on %s", pid, srv.Addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("gobind: %v", err)
	}
	<-done
	log.Printf("gobind: pid=%d drained", pid)
}
