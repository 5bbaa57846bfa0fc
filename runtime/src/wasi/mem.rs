//! Bounds-checked access to a guest's linear memory.
//!
//! Every pointer a guest hands to a host function is untrusted: it may point past the end of
//! memory or wrap around. All arithmetic here is done in `u64` and every access is checked, so
//! a bad pointer becomes `EFAULT`, never a host panic. Nothing here allocates in proportion to
//! a guest-supplied length: callers get borrowed slices of the guest memory itself.

use super::abi::errno;

/// An error number returned to the guest.
pub(crate) type Errno = u16;

/// A guest's linear memory, borrowed for the duration of one host call.
pub(crate) struct GuestMem<'a> {
    bytes: &'a mut [u8],
}

impl<'a> GuestMem<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes }
    }

    fn range(&self, ptr: u32, len: u64) -> Result<std::ops::Range<usize>, Errno> {
        let start = u64::from(ptr);
        let end = start.checked_add(len).ok_or(errno::FAULT)?;
        if end > self.bytes.len() as u64 {
            return Err(errno::FAULT);
        }
        // Both fit in usize: they are bounded by the length of a slice.
        Ok(start as usize..end as usize)
    }

    /// The `len` bytes at `ptr`.
    pub(crate) fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let range = self.range(ptr, u64::from(len))?;
        Ok(&self.bytes[range])
    }

    /// The `len` bytes at `ptr`, writable.
    pub(crate) fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let range = self.range(ptr, u64::from(len))?;
        Ok(&mut self.bytes[range])
    }

    /// A UTF-8 string of `len` bytes at `ptr`; `EILSEQ` when it is not valid UTF-8.
    pub(crate) fn str(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        std::str::from_utf8(self.slice(ptr, len)?).map_err(|_| errno::ILSEQ)
    }

    pub(crate) fn read_u8(&self, ptr: u32) -> Result<u8, Errno> {
        Ok(self.slice(ptr, 1)?[0])
    }

    pub(crate) fn read_u16(&self, ptr: u32) -> Result<u16, Errno> {
        let b = self.slice(ptr, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        let b = self.slice(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn read_u64(&self, ptr: u32) -> Result<u64, Errno> {
        let mut out = [0; 8];
        out.copy_from_slice(self.slice(ptr, 8)?);
        Ok(u64::from_le_bytes(out))
    }

    pub(crate) fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let len = u32::try_from(data.len()).map_err(|_| errno::FAULT)?;
        self.slice_mut(ptr, len)?.copy_from_slice(data);
        Ok(())
    }

    pub(crate) fn write_u8(&mut self, ptr: u32, v: u8) -> Result<(), Errno> {
        self.write(ptr, &[v])
    }

    pub(crate) fn write_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    pub(crate) fn write_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    /// Entry `index` of an `iovec` array at `array`: its `(buf, buf_len)`, both checked to lie
    /// in memory. Entries are read one at a time, so a guest-chosen count never sizes a host
    /// allocation.
    pub(crate) fn iovec(&self, array: u32, index: u32) -> Result<(u32, u32), Errno> {
        let at = u64::from(array) + u64::from(index) * 8;
        let at = u32::try_from(at).map_err(|_| errno::FAULT)?;
        let buf = self.read_u32(at)?;
        let len = self.read_u32(at.checked_add(4).ok_or(errno::FAULT)?)?;
        self.range(buf, u64::from(len))?;
        Ok((buf, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_and_wrapping_pointers_are_efault() {
        let mut bytes = vec![0u8; 16];
        let mut mem = GuestMem::new(&mut bytes);
        assert_eq!(mem.read_u32(12), Ok(0));
        assert_eq!(mem.read_u32(13), Err(errno::FAULT));
        assert_eq!(mem.slice(u32::MAX, 2).err(), Some(errno::FAULT));
        assert_eq!(mem.write_u64(9, 1), Err(errno::FAULT));
        assert_eq!(mem.write_u64(8, 0x0102), Ok(()));
        assert_eq!(mem.read_u16(8), Ok(0x0102));
    }

    #[test]
    fn iovecs_are_validated_entry_by_entry() {
        let mut bytes = vec![0u8; 64];
        let mut mem = GuestMem::new(&mut bytes);
        mem.write_u32(0, 32).unwrap();
        mem.write_u32(4, 8).unwrap();
        mem.write_u32(8, 60).unwrap();
        mem.write_u32(12, 8).unwrap();
        assert_eq!(mem.iovec(0, 0), Ok((32, 8)));
        assert_eq!(mem.iovec(0, 1), Err(errno::FAULT), "second iovec runs past the end");
        assert_eq!(mem.iovec(0, u32::MAX), Err(errno::FAULT), "entries past memory are faults");
    }

    #[test]
    fn strings_must_be_utf8() {
        let mut bytes = b"ok\xff".to_vec();
        let mem = GuestMem::new(&mut bytes);
        assert_eq!(mem.str(0, 2), Ok("ok"));
        assert_eq!(mem.str(0, 3), Err(errno::ILSEQ));
    }
}
