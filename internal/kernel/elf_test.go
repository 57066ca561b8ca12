package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// fakeVmlinux returns a deterministic size-byte x86-64 ELF executable (one PT_LOAD segment)
// whose body looks like code: plenty of E8/E9 call and jump instructions for the x86 BCJ
// filter to transform, mixed with pseudo-random bytes.
func fakeVmlinux(size int, machine elf.Machine) []byte {
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	le.PutUint16(b[16:], uint16(elf.ET_EXEC))
	le.PutUint16(b[18:], uint16(machine))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[24:], 0x1000000) // entry
	le.PutUint64(b[32:], 64)        // phoff
	le.PutUint16(b[52:], 64)        // ehsize
	le.PutUint16(b[54:], 56)        // phentsize
	le.PutUint16(b[56:], 1)         // phnum
	le.PutUint16(b[58:], 64)        // shentsize
	ph := b[64:]
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(ph[16:], 0xffffffff81000000) // vaddr
	le.PutUint64(ph[24:], 0x1000000)          // paddr
	le.PutUint64(ph[32:], uint64(size))       // filesz
	le.PutUint64(ph[40:], uint64(size))       // memsz
	le.PutUint64(ph[48:], 0x200000)           // align
	x := uint32(12345)
	for i := 120; i < size; {
		x = x*1103515245 + 12345
		switch r := x >> 16; {
		case r%4 == 0 && i+5 <= size: // call/jmp rel32 with a small signed offset
			b[i] = 0xe8 | byte(r>>8&1)
			rel := int32(r%4096) - 2048
			le.PutUint32(b[i+1:], uint32(rel))
			i += 5
		case r%4 == 1:
			b[i] = 0x90 // nop
			i++
		default:
			b[i] = byte(r >> 3)
			i++
		}
	}
	return b
}

// fakeModule returns a minimal relocatable x86-64 ELF with a .modinfo section holding the
// given key=value strings, the way a .ko carries them.
func fakeModule(modinfo ...string) []byte {
	var info bytes.Buffer
	for _, kv := range modinfo {
		info.WriteString(kv)
		info.WriteByte(0)
	}
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	le := binary.LittleEndian
	infoOff := 64
	strOff := infoOff + info.Len()
	shOff := (strOff + len(shstr) + 7) &^ 7
	b := make([]byte, shOff+3*64)
	copy(b, []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	le.PutUint16(b[16:], uint16(elf.ET_REL))
	le.PutUint16(b[18:], uint16(elf.EM_X86_64))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[40:], uint64(shOff))
	le.PutUint16(b[52:], 64) // ehsize
	le.PutUint16(b[58:], 64) // shentsize
	le.PutUint16(b[60:], 3)  // shnum
	le.PutUint16(b[62:], 2)  // shstrndx
	copy(b[infoOff:], info.Bytes())
	copy(b[strOff:], shstr)
	section := func(i int, name uint32, typ elf.SectionType, off, size int) {
		s := b[shOff+64*i:]
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], uint32(typ))
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1) // addralign
	}
	section(1, 1, elf.SHT_PROGBITS, infoOff, info.Len())
	section(2, 10, elf.SHT_STRTAB, strOff, len(shstr))
	return b
}
