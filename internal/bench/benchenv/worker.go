package benchenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// WorkerArgs are the arguments that make the coordinator CLI a caller
// process (its hidden `bench worker` subcommand), when Config.Worker is nil.
var WorkerArgs = []string{"bench", "worker"}

// Worker is a caller process started by the run: a child of this
// executable that talks with the run in JSON values, one a line, on its
// stdin and stdout. Its stderr is kept for error messages.
type Worker struct {
	*Child
	in   io.WriteCloser
	enc  *json.Encoder
	msgs chan json.RawMessage // what the process wrote; closed at its end
	end  error                // why msgs closed; read after it did
}

// workerBacklog bounds the values of a process not yet received; a
// process that writes more is misbehaving, and the rest is dropped so
// that it never blocks on its stdout.
const workerBacklog = 16

// workerCommand returns the command that runs a caller process.
func (e *Env) workerCommand() (*exec.Cmd, error) {
	if e.cfg.Worker != nil {
		return e.cfg.Worker(), nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable to run caller processes: %w", err)
	}
	return exec.Command(exe, WorkerArgs...), nil
}

// StartWorker starts a caller process. Like the nodes, it is stopped by
// its pid at the latest by Close, and dies with the run (Pdeathsig).
func (e *Env) StartWorker(id string) (*Worker, error) {
	cmd, err := e.workerCommand()
	if err != nil {
		return nil, err
	}
	return e.StartCommand(id, cmd)
}

// read decodes what the process writes until it exits.
func (w *Worker) read(r io.Reader) {
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var m json.RawMessage
		if err := dec.Decode(&m); err != nil {
			w.end = err
			close(w.msgs)
			// Whatever follows a value that is not JSON is read and dropped.
			_, _ = io.Copy(io.Discard, r)
			return
		}
		select {
		case w.msgs <- m:
		default:
		}
	}
}

// Send writes v to the process's stdin as one line of JSON.
func (w *Worker) Send(v any) error {
	if err := w.enc.Encode(v); err != nil {
		// Most likely it has exited: its stderr is complete once it has.
		select {
		case <-w.done:
		case <-time.After(time.Second):
		}
		return fmt.Errorf("%w; %s", err, w.Describe())
	}
	return nil
}

// Receive waits for the next JSON value the process writes to stdout and
// decodes it into v; it fails once the process has exited or ctx ends.
func (w *Worker) Receive(ctx context.Context, v any) error {
	select {
	case m, ok := <-w.msgs:
		if !ok {
			return fmt.Errorf("wrote nothing more (%v); %s", w.end, w.Describe())
		}
		if err := json.Unmarshal(m, v); err != nil {
			return fmt.Errorf("%w; %s", err, w.Describe())
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w; %s", ctx.Err(), w.Describe())
	}
}

// CloseInput closes the process's stdin, which tells it nothing more comes.
func (w *Worker) CloseInput() { _ = w.in.Close() }

// Describe names the process and ends with the end of its stderr, for
// error messages.
func (w *Worker) Describe() string {
	return fmt.Sprintf("caller process %s (pid %d) stderr:\n%s", w.id, w.Pid(), w.Output())
}

// Done is closed when the process has exited.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Kill kills the process by its pid, unless it has exited.
func (w *Worker) Kill() { w.Signal(syscall.SIGKILL) }
