// The fuzz input as a stream of bytes: the target reads it front to back,
// and an input that ends early reads as zeros, so every prefix of an input is
// a valid input too (libFuzzer's mutations shorten inputs all the time).
#ifndef MRSYNC_FUZZ_INPUT_HPP
#define MRSYNC_FUZZ_INPUT_HPP

#include <cstddef>
#include <cstdint>

namespace mrsync::fuzz {

class Input {
public:
	Input(const std::uint8_t *data, std::size_t size) : data_(data), size_(size) {}

	bool done() const { return at_ >= size_; }

	std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }

	/** A value in [0, n) from one byte (n <= 256). */
	unsigned below(unsigned n) { return byte() % n; }

private:
	const std::uint8_t *data_;
	std::size_t size_;
	std::size_t at_ = 0;
};

} // namespace mrsync::fuzz

#endif
