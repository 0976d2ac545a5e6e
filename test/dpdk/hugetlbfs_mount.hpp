// A private hugetlbfs mount for the EAL modes that need one (--legacy-mem,
// --socket-mem), removed at exit. Root only; the suite is skipped otherwise.
#ifndef MRSYNC_TEST_HUGETLBFS_MOUNT_HPP
#define MRSYNC_TEST_HUGETLBFS_MOUNT_HPP

#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace mrsync::test {

class HugetlbfsMount {
public:
	HugetlbfsMount()
	{
		char tmpl[] = "/tmp/mrsync-huge-XXXXXX";
		if (!mkdtemp(tmpl))
			return;
		dir_ = tmpl;
		if (mount("nodev", dir_.c_str(), "hugetlbfs", 0, "pagesize=2M") != 0) {
			rmdir(dir_.c_str());
			dir_.clear();
		}
	}
	~HugetlbfsMount()
	{
		if (dir_.empty())
			return;
		umount2(dir_.c_str(), MNT_DETACH);
		rmdir(dir_.c_str());
	}
	HugetlbfsMount(const HugetlbfsMount &) = delete;
	HugetlbfsMount &operator=(const HugetlbfsMount &) = delete;

	/** The mount point, or "" if mounting failed (not root). */
	const std::string &dir() const { return dir_; }

private:
	std::string dir_;
};

} // namespace mrsync::test

#endif
