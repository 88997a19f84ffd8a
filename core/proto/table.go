package proto

import (
	"encoding/binary"
	"unsafe"
)

// nativeLE: this host keeps integers little-endian, as the inode image
// does. Then the memory of the data_vdi_id and gref tables is their image
// byte for byte (Gref is two int32s, no padding), and a range of it moves
// with one copy. Decoding a whole inode element by element took ~20 ms,
// and under the race detector, which checks every element's access, most
// of the unit tests' time; one copy is one range check.
var nativeLE = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// u32Bytes is the memory of s.
func u32Bytes(s []uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*4)
}

// grefBytes is the memory of s.
func grefBytes(s []Gref) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(Gref{})))
}
