package pack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A job built by a pack worker on another machine travels as a small
// message: its parts (thousands for a CAR of small files) and its Result's
// files could pass a NATS message's size limit. Both stay on the file
// system the pack and its workers share anyway, since a worker writes its
// CAR into the pack's state directory: the worker reads the parts the plan
// recorded (LoadParts) and saves its Result beside the CAR (SaveResult),
// and the message carries the job without parts (Brief) and the Result
// without files.

// Brief is the job without its parts, as a work queue carries it.
func (j Job) Brief() Job {
	j.Parts = nil
	return j
}

// CARFile is where BuildCAR puts the job's CAR.
func (j Job) CARFile() string { return j.state().path(tmpName(j.Index)) }

// ResultFile is where SaveResult puts the job's Result.
func (j Job) ResultFile() string { return j.state().path(resultName(j.Index)) }

func (j Job) state() *state { return &state{out: j.Out, dir: filepath.Join(j.Out, StateDir)} }

func resultName(i int) string { return fmt.Sprintf("tmp/%06d.json", i) }

// LoadParts fills in job's parts from the plan recorded under job.Out.
func LoadParts(job *Job) error {
	var rec Job
	ok, err := job.state().readJSON(jobName(job.Index), &rec)
	if err == nil && !ok {
		err = fmt.Errorf("job %d is not in the plan recorded under %s", job.Index, job.Out)
	}
	if err != nil {
		return err
	}
	job.Parts = rec.Parts
	return nil
}

// SaveResult records r, the Result of job's CAR, beside the CAR.
func SaveResult(job Job, r *Result) error { return job.state().writeJSON(resultName(job.Index), r) }

// LoadResult reads the Result a worker saved for job, checking that its
// CAR is there too; either missing is an fs.ErrNotExist.
func LoadResult(job Job) (*Result, error) {
	var r Result
	ok, err := job.state().readJSON(resultName(job.Index), &r)
	if err == nil && !ok {
		err = fmt.Errorf("no result of CAR %d at %s: %w", job.Index, job.ResultFile(), fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(job.CARFile())
	if err != nil {
		return nil, err
	}
	if uint64(fi.Size()) != r.Size || r.Index != job.Index {
		return nil, fmt.Errorf("CAR %d at %s has %d bytes, its result says CAR %d of %d bytes",
			job.Index, job.CARFile(), fi.Size(), r.Index, r.Size)
	}
	return &r, nil
}

// RemoveResult removes the Result SaveResult recorded for job, once the
// pack has recorded it itself.
func RemoveResult(job Job) error {
	if err := os.Remove(job.ResultFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
