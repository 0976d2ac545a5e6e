// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mrsync: the /dev/mrsync misc device. An open file is bound to the opener's
 * address space (mmgrab); mmap gives the read-only header + event ring;
 * release (close, or process exit) removes every watch and frees everything.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/version.h>

#include "mrsync_priv.h"

static ushort mrsync_mode = 0666;
module_param_named(mode, mrsync_mode, ushort, 0444);
MODULE_PARM_DESC(mode, "permissions of /dev/mrsync (default 0666: a file only sees its opener's address space)");

unsigned int mrsync_max_watches = 65536;
module_param_named(max_watches, mrsync_max_watches, uint, 0644);
MODULE_PARM_DESC(max_watches, "watches one open file may hold (default 65536)");

static int mrsync_open(struct inode *inode, struct file *file)
{
	struct mrsync_file *f;
	int ret;

	if (!current->mm)
		return -EINVAL;

	f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	if (!f)
		return -ENOMEM;
	ret = mrsync_ring_alloc(&f->ring, MRSYNC_RING_DEFAULT);
	if (ret)
		goto out_free_file;

	mutex_init(&f->watch_lock);
	mutex_init(&f->setup_lock);
	spin_lock_init(&f->lock);
	init_waitqueue_head(&f->waitq);
	xa_init_flags(&f->watches, XA_FLAGS_ALLOC);
	mmgrab(current->mm);
	f->mm = current->mm;

	file->private_data = f;
	return nonseekable_open(inode, file);

out_free_file:
	kfree(f);
	return ret;
}

static int mrsync_release(struct inode *inode, struct file *file)
{
	struct mrsync_file *f = file->private_data;

	mrsync_watch_remove_all(f);
	xa_destroy(&f->watches);
	mrsync_ring_free(&f->ring);
	mmdrop(f->mm);
	mutex_destroy(&f->setup_lock);
	mutex_destroy(&f->watch_lock);
	kfree(f);
	return 0;
}

static void mrsync_vma_flags(struct vm_area_struct *vma, unsigned long set, unsigned long clear)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_mod(vma, set, clear);
#else
	vma->vm_flags = (vma->vm_flags & ~clear) | set;
#endif
}

/*
 * Read-only, shared with nothing: write or exec access is refused and cannot
 * be added by mprotect, the mapping is not copied into a fork child (whose
 * file would be bound to another mm anyway) and cannot grow.
 * Called with mmap_lock held for writing.
 */
static int mrsync_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mrsync_file *f = file->private_data;
	unsigned long size = vma->vm_end - vma->vm_start;
	int ret;

	if (vma->vm_mm != f->mm)
		return -EBADFD;
	if (vma->vm_flags & (VM_WRITE | VM_EXEC))
		return -EPERM;
	if (vma->vm_pgoff)
		return -EINVAL;

	mutex_lock(&f->setup_lock);
	if (size > f->ring.map_size) {
		ret = -EINVAL;
		goto out_unlock;
	}
	mrsync_vma_flags(vma, VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP,
			 VM_MAYWRITE | VM_MAYEXEC);
	ret = remap_vmalloc_range(vma, f->ring.hdr, 0);
	if (!ret)
		f->frozen = true;
out_unlock:
	mutex_unlock(&f->setup_lock);
	return ret;
}

/*
 * Readable while the generation differs from the one the reader acknowledged
 * (MRSYNC_IOC_ACK, <linux/mrsync.h>); the invalidate callback wakes the queue
 * after it moves the generation. Registering before checking closes the
 * race with a callback in between: it either ran before the check (seen) or
 * wakes the entry just added. Another mm gets EPOLLERR, as -EBADFD for
 * every other operation: it never learns the owner's state.
 */
static __poll_t mrsync_poll(struct file *file, poll_table *wait)
{
	struct mrsync_file *f = file->private_data;

	if (mrsync_check_mm(f))
		return EPOLLERR;
	poll_wait(file, &f->waitq, wait);
	return mrsync_readable(f) ? EPOLLIN | EPOLLRDNORM : 0;
}

static const struct file_operations mrsync_fops = {
	.owner = THIS_MODULE,
	.open = mrsync_open,
	.release = mrsync_release,
	.unlocked_ioctl = mrsync_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = mrsync_mmap,
	.poll = mrsync_poll,
	.llseek = no_llseek,
};

static struct miscdevice mrsync_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "mrsync",
	.fops = &mrsync_fops,
};

static int __init mrsync_init(void)
{
	mrsync_misc.mode = mrsync_mode;
	return misc_register(&mrsync_misc);
}

static void __exit mrsync_exit(void)
{
	misc_deregister(&mrsync_misc);
}

module_init(mrsync_init);
module_exit(mrsync_exit);

MODULE_DESCRIPTION("mrsync: mapped generation counter and event ring for watched address ranges");
MODULE_AUTHOR("mrsync project");
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION("1.0");
