package jepsen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// The disk nemesis gives every node slot its own small file system, a
// tmpfs mounted on cluster/nN.disk, with the node's data directory inside
// it (cluster/nN.disk/data) and, during a fault, a filler file beside it
// (cluster/nN.disk/FILLER) that takes every free byte. A tmpfs is real
// kernel file system code (ENOSPC from write, fallocate, mkdir, rename),
// needs no image file or loop device, and vanishes with its mount: the
// harness copies the data directory out (cluster/nN, as without a tmpfs)
// before it unmounts. Mounting needs root (CAP_SYS_ADMIN); without it the
// disk nemesis is unavailable.

const (
	// DefaultDiskBytes is the size of each node's tmpfs. A node holds
	// about 150 MiB of preallocated files at all times (the engine's
	// WAL, about 71 MiB, and the raft log's current segment, 72 MiB), twice
	// that while both roll over, plus its data and the reserve: 512 MiB
	// leaves room for all of it, so that only the nemesis fills the disk.
	// The memory it costs is taken only as files are written (and by the
	// filler during a fault).
	DefaultDiskBytes = 512 << 20
	// DefaultDiskReserveBytes is the servers' --disk-reserve on a tmpfs:
	// large enough for the node's raft hard state and a few memtable
	// flushes, small next to the tmpfs.
	DefaultDiskReserveBytes = 8 << 20
	// defaultReserveOnDisk is the --disk-reserve of nodes on the report's
	// own file system (without the disk nemesis): the server's default
	// is 1% of the file system, up to 1 GiB per node and run of fallocated
	// space in the report, for a reserve no run uses.
	defaultReserveOnDisk = 32 << 20
	// fillerName is the filler file at the root of a node's tmpfs.
	fillerName = "FILLER"
	// reserveName is the server's ballast file in its data directory
	// (internal/server diskfull.go).
	reserveName = "RESERVE"
)

var tmpfsOnce struct {
	sync.Once
	err error
}

// TmpfsAvailable reports whether this process can mount a tmpfs (the disk
// nemesis needs one per node): nil when it can, else why not. It tries
// once, on a 1 MiB tmpfs in a temporary directory.
func TmpfsAvailable() error {
	tmpfsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kaya-jepsen-tmpfs-probe-*")
		if err != nil {
			tmpfsOnce.err = err
			return
		}
		defer os.Remove(dir)
		if err := mountTmpfs(dir, 1<<20); err != nil {
			tmpfsOnce.err = err
			return
		}
		tmpfsOnce.err = syscall.Unmount(dir, 0)
	})
	if tmpfsOnce.err != nil {
		return fmt.Errorf("mounting a small tmpfs per node needs root (CAP_SYS_ADMIN): %w", tmpfsOnce.err)
	}
	return nil
}

func mountTmpfs(dir string, size int64) error {
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		return fmt.Errorf("mount -t tmpfs -o size=%d tmpfs %s: %w", size, dir, err)
	}
	return nil
}

// UseTmpfs puts every slot's data directory on its own tmpfs of size
// bytes, and starts the servers with --disk-reserve reserve. Call it before
// the first Start; Close unmounts.
func (c *Cluster) UseTmpfs(size, reserve int64) error {
	for _, n := range c.Nodes {
		if n.proc != nil {
			return fmt.Errorf("node %d runs already: UseTmpfs comes before Start", n.ID)
		}
	}
	for _, n := range c.Nodes {
		mnt := filepath.Join(c.dir, fmt.Sprintf("n%d.disk", n.slot))
		if err := os.MkdirAll(mnt, 0o700); err != nil {
			c.unmountAll()
			return err
		}
		if err := mountTmpfs(mnt, size); err != nil {
			_ = os.Remove(mnt)
			c.unmountAll()
			return err
		}
		n.disk, n.Dir = mnt, filepath.Join(mnt, "data")
	}
	c.diskReserve = reserve
	return nil
}

// Close shuts the cluster down (Shutdown) and, for slots on a tmpfs,
// copies each data directory out to cluster/nN (holes stay holes) and
// unmounts. It returns Shutdown's error, or the first unmount failure.
func (c *Cluster) Close() error {
	err := c.Shutdown()
	if uerr := c.unmountAll(); err == nil {
		err = uerr
	}
	return err
}

// unmountAll copies out and unmounts every slot's tmpfs.
func (c *Cluster) unmountAll() error {
	var first error
	for _, n := range c.Nodes {
		if n.disk == "" {
			continue
		}
		kept := filepath.Join(c.dir, fmt.Sprintf("n%d", n.slot))
		if err := copyTree(n.Dir, kept); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = fmt.Errorf("copying node %d's data out of its tmpfs: %w", n.ID, err)
		}
		err := syscall.Unmount(n.disk, 0)
		if err != nil {
			// Busy (a process the harness lost track of): detach it, so
			// that it goes once nothing uses it.
			err = syscall.Unmount(n.disk, syscall.MNT_DETACH)
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("unmounting %s: %w (umount it by hand)", n.disk, err)
			}
			continue
		}
		_ = os.Remove(n.disk)
		n.disk, n.Dir = "", kept
	}
	return first
}

// Fill fills node id's tmpfs with a filler file until no byte is left,
// and returns the bytes it added and the space left (0 unless the node
// freed some meanwhile). Called again, it takes whatever was freed since.
func (c *Cluster) Fill(id uint64) (added int64, err error) {
	n := c.Node(id)
	if n == nil || n.disk == "" {
		return 0, fmt.Errorf("node %d has no tmpfs of its own", id)
	}
	return fillFile(filepath.Join(n.disk, fillerName))
}

// Unfill deletes node id's filler.
func (c *Cluster) Unfill(id uint64) error {
	n := c.Node(id)
	if n == nil || n.disk == "" {
		return nil
	}
	return unfillSlot(n)
}

func unfillSlot(n *Node) error {
	if err := os.Remove(filepath.Join(n.disk, fillerName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// FreeBytes returns the free bytes of node id's tmpfs.
func (c *Cluster) FreeBytes(id uint64) (int64, error) {
	n := c.Node(id)
	if n == nil || n.disk == "" {
		return 0, fmt.Errorf("node %d has no tmpfs of its own", id)
	}
	return freeBytes(n.disk)
}

func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// maxFillSteps bounds the allocations of one Fill: each step either takes
// half of what is left or ends the fill, so a few dozen suffice; the
// bound only matters if the node keeps freeing space as fast as the
// filler takes it.
const maxFillSteps = 1000

// fillFile grows the file at path until the file system refuses
// (ENOSPC): fallocate in steps that halve on refusal down to one page,
// then single pages written (for file systems without fallocate).
func fillFile(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return 0, nil // not even an inode left: full already
		}
		return 0, err
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	start := off
	const page = 4096
	fallocate := true
	for step := 0; step < maxFillSteps; step++ {
		avail, err := freeBytes(filepath.Dir(path))
		if err != nil {
			return off - start, err
		}
		chunk := max(avail/page*page, page)
		if fallocate {
			for {
				err = syscall.Fallocate(int(f.Fd()), 0, off, chunk)
				if err == nil {
					off += chunk
					break
				}
				if errors.Is(err, syscall.EOPNOTSUPP) {
					fallocate = false
					break
				}
				if !errors.Is(err, syscall.ENOSPC) {
					return off - start, fmt.Errorf("fallocate %s: %w", path, err)
				}
				if chunk == page {
					return off - start, nil // not one page left
				}
				chunk = max(chunk/2/page*page, page)
			}
			if fallocate {
				continue
			}
		}
		// Without fallocate: write pages until refused.
		zero := make([]byte, page)
		for i := int64(0); i < chunk/page; i++ {
			if _, err := f.WriteAt(zero, off); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					return off - start, nil
				}
				return off - start, err
			}
			off += page
		}
	}
	return off - start, nil
}

// copyBlock is copyTree's unit: a block of zeros is skipped (a hole in the
// copy), so preallocated log files cost no space in the report.
const copyBlock = 64 << 10

// copyTree copies the directory tree src to dst (which must not exist yet
// or be an empty directory): directories, regular files (with holes where
// src has zeros) and symbolic links. The filler and the ballast are left
// out.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case d.Name() == fillerName || d.Name() == reserveName:
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			return copySparse(path, to)
		}
		return nil // sockets, devices: none in a data directory
	})
}

func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, copyBlock)
	zero := make([]byte, copyBlock)
	var off int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				out.Close()
				return err
			}
		}
		off += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
