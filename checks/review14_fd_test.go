package checks

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// R4 of the issue 14 review: the trigger closed cancelFD while context.AfterFunc's goroutine may
// still be about to write to it (stop() returning false does not wait for
// f). The write then lands on whatever fd reused the number. Stress: a
// "pidfd" (an eventfd we control) fires as the context is cancelled; after
// the trigger returns, fresh eventfds take the freed numbers; any of them
// with a non-zero counter received a stray write meant for cancelFD.
func TestReviewCancelFDWriteAfterClose(t *testing.T) {
	stray := 0
	for i := 0; i < 3000 && stray == 0; i++ {
		fake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		rep := &reported{pids: []int{424242}}
		open := func(pid, _ int) (int, error) { return unix.Dup(fake) }
		ctx, cancel := context.WithCancel(context.Background())
		tctx := context.WithValue(ctx, reportKey{}, rep)
		armed := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			procTrigger{what: "x", still: func(int) bool { return true }, open: open}.run(tctx, func() {})
		}()
		_ = armed
		time.Sleep(200 * time.Microsecond) // let it reach poll
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(fake, one[:])
		cancel()
		<-done
		var grab []int
		for range 6 {
			fd, _ := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			grab = append(grab, fd)
		}
		time.Sleep(300 * time.Microsecond)
		var b [8]byte
		for _, fd := range grab {
			if n, err := unix.Read(fd, b[:]); err == nil && n == 8 && binary.NativeEndian.Uint64(b[:]) != 0 {
				stray++
				t.Logf("iteration %d: fd %d (reused number) received a write meant for the closed cancelFD", i, fd)
			}
			unix.Close(fd)
		}
		unix.Close(fake)
	}
	_ = os.Getpid
	if stray > 0 {
		t.Errorf("%d stray write(s) into a reused fd", stray)
	}
}
