// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mrsync: ioctl argument checking and dispatch. Every field is validated here,
 * before anything changes; the errnos are those listed in the uapi header.
 */
#include <linux/fs.h>
#include <linux/log2.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/uaccess.h>

#include "mrsync_priv.h"

static long mrsync_ioc_version(void __user *uarg)
{
	struct mrsync_kmod_version v = {
		.abi_version = MRSYNC_ABI_VERSION,
		.features = MRSYNC_FEATURE_CONSUME | MRSYNC_FEATURE_READ_BEGIN |
			    MRSYNC_FEATURE_POLL,
		.ring_offset = PAGE_SIZE,
		.entry_size = sizeof(struct mrsync_kmod_event),
		.ring_min = MRSYNC_RING_MIN,
		.ring_max = MRSYNC_RING_MAX,
		.max_watches = READ_ONCE(mrsync_max_watches),
	};

	return copy_to_user(uarg, &v, sizeof(v)) ? -EFAULT : 0;
}

static long mrsync_ioc_set_ring(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_ring_config c;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.flags)
		return -EINVAL;
	if (c.entries < MRSYNC_RING_MIN || c.entries > MRSYNC_RING_MAX)
		return -ERANGE;
	if (!is_power_of_2(c.entries))
		return -EINVAL;
	return mrsync_set_ring(f, c.entries);
}

static long mrsync_ioc_watch(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_watch w;
	u64 end, id;
	int ret;

	if (copy_from_user(&w, uarg, sizeof(w)))
		return -EFAULT;
	if (w.flags || w.reserved)
		return -EINVAL;
	if (!PAGE_ALIGNED(w.addr) || !PAGE_ALIGNED(w.len))
		return -EINVAL;
	if (!w.len)
		return -ENODATA;
	if (check_add_overflow(w.addr, w.len, &end))
		return -EOVERFLOW;
	if (end > TASK_SIZE)
		return -ERANGE;

	ret = mrsync_watch_add(f, w.addr, w.len, w.cookie, &id);
	if (ret)
		return ret;
	w.id = id;
	if (copy_to_user(uarg, &w, sizeof(w))) {
		mrsync_watch_remove(f, id);
		return -EFAULT;
	}
	return 0;
}

static long mrsync_ioc_unwatch(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_unwatch u;

	if (copy_from_user(&u, uarg, sizeof(u)))
		return -EFAULT;
	if (u.flags)
		return -EINVAL;
	return mrsync_watch_remove(f, u.id);
}

static long mrsync_ioc_consume(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_consume c;

	if (copy_from_user(&c, uarg, sizeof(c)))
		return -EFAULT;
	if (c.flags)
		return -EINVAL;
	return mrsync_consume(f, c.tail);
}

static long mrsync_ioc_ack(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_ack a;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.flags)
		return -EINVAL;
	return mrsync_ack(f, a.generation);
}

static long mrsync_ioc_read_begin(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_read_begin rb;
	u64 seq;
	int ret;

	if (copy_from_user(&rb, uarg, sizeof(rb)))
		return -EFAULT;
	if (rb.flags || rb.reserved)
		return -EINVAL;
	/* may sleep until the invalidations in progress end */
	ret = mrsync_watch_read_begin(f, rb.id, &seq);
	if (ret)
		return ret;
	rb.seq = seq;
	return copy_to_user(uarg, &rb, sizeof(rb)) ? -EFAULT : 0;
}

static long mrsync_ioc_stats(struct mrsync_file *f, void __user *uarg)
{
	struct mrsync_kmod_stats st = {};

	mrsync_get_stats(f, &st);
	return copy_to_user(uarg, &st, sizeof(st)) ? -EFAULT : 0;
}

long mrsync_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct mrsync_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case MRSYNC_IOC_VERSION:
	case MRSYNC_IOC_SET_RING:
	case MRSYNC_IOC_WATCH:
	case MRSYNC_IOC_UNWATCH:
	case MRSYNC_IOC_CONSUME:
	case MRSYNC_IOC_STATS:
	case MRSYNC_IOC_READ_BEGIN:
	case MRSYNC_IOC_ACK:
		break;
	default:
		return -ENOTTY;
	}
	if (mrsync_check_mm(f))
		return -EBADFD;

	switch (cmd) {
	case MRSYNC_IOC_VERSION:
		return mrsync_ioc_version(uarg);
	case MRSYNC_IOC_SET_RING:
		return mrsync_ioc_set_ring(f, uarg);
	case MRSYNC_IOC_WATCH:
		return mrsync_ioc_watch(f, uarg);
	case MRSYNC_IOC_UNWATCH:
		return mrsync_ioc_unwatch(f, uarg);
	case MRSYNC_IOC_CONSUME:
		return mrsync_ioc_consume(f, uarg);
	case MRSYNC_IOC_STATS:
		return mrsync_ioc_stats(f, uarg);
	case MRSYNC_IOC_READ_BEGIN:
		return mrsync_ioc_read_begin(f, uarg);
	case MRSYNC_IOC_ACK:
		return mrsync_ioc_ack(f, uarg);
	}
	return -ENOTTY;
}
