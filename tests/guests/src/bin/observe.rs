//! Prints, one per line, everything about its world a guest can observe, so two runs can be
//! compared byte for byte. Modes (argv\[3\]):
//!
//! * `report` (default): args, environment, clocks, random bytes, the whole input tree with
//!   every `filestat` field, `/algorithm`, NaN bit patterns, relaxed SIMD results; also writes
//!   a few output files;
//! * `memory`: grows memory one page at a time until refused, prints how far it got, exits 0;
//! * `stack`: recurses until the stack is exhausted, printing the depth every 1000 frames;
//! * `fma`: `relaxed_madd` and `relaxed_nmadd` on lanes holding NaNs with payloads and signs
//!   (their bits must not depend on the CPU having FMA).
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use std::fmt::Write as _;
    use std::hint::black_box;

    use tidepool_test_guests::*;

    pub fn main() {
        match args().get(3).map(String::as_str) {
            Some("memory") => memory(),
            Some("stack") => {
                recurse(0);
            }
            Some("fma") => {
                let mut r = String::new();
                fma(&mut r);
                print!("{r}");
            }
            _ => report(),
        }
    }

    fn report() {
        let mut r = String::new();
        writeln!(r, "args {:?}", args()).unwrap();
        writeln!(r, "env {:?}", std::env::vars().collect::<Vec<_>>()).unwrap();
        for (name, id) in [("realtime", CLOCKID_REALTIME), ("monotonic", CLOCKID_MONOTONIC)] {
            writeln!(r, "clock {name} {}", unsafe { clock_time_get(id, 1) }.unwrap()).unwrap();
        }
        writeln!(r, "std::time {:?}", std::time::SystemTime::now()).unwrap();
        let mut random = [0u8; 32];
        unsafe { random_get(random.as_mut_ptr(), 32) }.unwrap();
        writeln!(r, "random {}", random.iter().map(|b| format!("{b:02x}")).collect::<String>()).unwrap();
        let map: std::collections::HashMap<u32, u32> = (0..16).map(|i| (i, i)).collect();
        writeln!(r, "hashmap order {:?}", map.keys().collect::<Vec<_>>()).unwrap();
        walk(&mut r, inputs(), "/data/inputs");
        walk(&mut r, preopen("/algorithm"), "/algorithm");
        nans(&mut r);
        relaxed_simd(&mut r);
        let out = outputs();
        put(out, "report.txt", r.as_bytes());
        mkdir(out, "empty-dir").unwrap();
        mkdir(out, "nested").unwrap();
        put(out, "nested/z.bin", b"");
        print!("{r}");
    }

    fn walk(r: &mut String, dir: Fd, path: &str) {
        for (name, d) in readdir_all(dir, 128) {
            let s = if name == "." || name == ".." { filestat(dir).unwrap() } else { stat(dir, false, &name).unwrap() };
            writeln!(
                r,
                "entry {path}/{name} d_ino={} d_type={} ino={} dev={} type={} nlink={} size={} atim={} mtim={} ctim={}",
                d.d_ino,
                d.d_type.raw(),
                s.ino,
                s.dev,
                s.filetype.raw(),
                s.nlink,
                s.size,
                s.atim,
                s.mtim,
                s.ctim
            )
            .unwrap();
            if name != "." && name != ".." && s.filetype == FILETYPE_DIRECTORY {
                walk(r, open_dir(dir, &name), &format!("{path}/{name}"));
            }
        }
    }

    fn nans(r: &mut String) {
        let zero32 = black_box(0.0f32);
        let zero64 = black_box(0.0f64);
        let odd32 = black_box(f32::from_bits(0x7fa0_0001)); // a non-canonical (signalling) NaN
        let odd64 = black_box(f64::from_bits(0xfff0_0000_0000_0001));
        writeln!(r, "nan f32 0/0 {:#010x}", (zero32 / zero32).to_bits()).unwrap();
        writeln!(r, "nan f64 0/0 {:#018x}", (zero64 / zero64).to_bits()).unwrap();
        writeln!(r, "nan f32 sqrt(-1) {:#010x}", black_box(-1.0f32).sqrt().to_bits()).unwrap();
        writeln!(r, "nan f32 odd+1 {:#010x}", (odd32 + black_box(1.0)).to_bits()).unwrap();
        writeln!(r, "nan f64 odd*2 {:#018x}", (odd64 * black_box(2.0)).to_bits()).unwrap();
        writeln!(r, "nan f64 -(0/0) {:#018x}", (-(zero64 / zero64) * black_box(1.0)).to_bits()).unwrap();
    }

    #[target_feature(enable = "relaxed-simd")]
    fn relaxed(r: &mut String) {
        use core::arch::wasm32::*;
        let bits = |v: v128| -> [u32; 4] { unsafe { std::mem::transmute(v) } };
        let one = 1.0f32 + f32::from_bits(0x3980_0000); // 1 + 2^-12
        let a = black_box(f32x4(one, 2.0, 3.0, 0.0));
        let c = black_box(f32x4(-(1.0 + f32::from_bits(0x3a00_0000)), 1.0, 1.0, -0.0)); // -(1 + 2^-11)
        writeln!(r, "relaxed madd {:08x?}", bits(f32x4_relaxed_madd(a, a, c))).unwrap();
        let t = black_box(f32x4(f32::NAN, 1e10, -1e10, -1.5));
        writeln!(r, "relaxed trunc {:08x?}", bits(i32x4_relaxed_trunc_f32x4(t))).unwrap();
        let idx = black_box(i8x16(0, 1, 2, 3, 16, 17, 100, -1, 4, 5, 6, 7, 8, 9, 10, 11));
        let tbl = black_box(u8x16(10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25));
        writeln!(r, "relaxed swizzle {:08x?}", bits(i8x16_relaxed_swizzle(tbl, idx))).unwrap();
        let m = black_box(f32x4(-0.0, f32::NAN, 1.0, 0.0));
        let n = black_box(f32x4(0.0, 1.0, f32::NAN, -0.0));
        writeln!(r, "relaxed min {:08x?}", bits(f32x4_relaxed_min(m, n))).unwrap();
        writeln!(r, "relaxed max {:08x?}", bits(f32x4_relaxed_max(m, n))).unwrap();
        let mask = black_box(u32x4(0xffff_0000, 0, 0xffff_ffff, 0x0f0f_0f0f));
        let x = black_box(u32x4(0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444));
        let y = black_box(u32x4(0xaaaa_aaaa, 0xbbbb_bbbb, 0xcccc_cccc, 0xdddd_dddd));
        writeln!(r, "relaxed laneselect {:08x?}", bits(i32x4_relaxed_laneselect(x, y, mask))).unwrap();
        let q = black_box(i16x8(i16::MIN, i16::MIN, 16384, -16384, 1, 2, 3, 4));
        writeln!(r, "relaxed q15mulr {:08x?}", bits(i16x8_relaxed_q15mulr(q, q))).unwrap();
        let d = black_box(i8x16(-128, 127, -1, 1, 100, -100, 50, 25, -128, -128, -128, -128, 1, 2, 3, 4));
        writeln!(r, "relaxed dot {:08x?}", bits(i16x8_relaxed_dot_i8x16_i7x16(d, d))).unwrap();
    }

    #[target_feature(enable = "relaxed-simd")]
    fn fma(r: &mut String) {
        use core::arch::wasm32::*;
        let bits32 = |v: v128| -> [u32; 4] { unsafe { std::mem::transmute(v) } };
        let bits64 = |v: v128| -> [u64; 2] { unsafe { std::mem::transmute(v) } };
        let nan = |bits: u32| f32::from_bits(bits);
        // Lane 3: 0 × ∞ + NaN, where fused hardware returns the addend's NaN and a multiply
        // then an add returns the product's default NaN.
        let a = black_box(f32x4(nan(0x7fa0_0001), nan(0xffc0_1234), 2.0, 0.0));
        let b = black_box(f32x4(1.0, 3.0, nan(0x7f90_0000), f32::INFINITY));
        let c = black_box(f32x4(nan(0xff80_0001), 0.5, 1.0, nan(0x7fa0_1234)));
        writeln!(r, "madd f32x4 {:08x?}", bits32(f32x4_relaxed_madd(a, b, c))).unwrap();
        writeln!(r, "nmadd f32x4 {:08x?}", bits32(f32x4_relaxed_nmadd(a, b, c))).unwrap();
        let d = black_box(f64x2(f64::from_bits(0x7ff4_0000_0000_0001), 0.0));
        let e = black_box(f64x2(1.0, f64::INFINITY));
        let g = black_box(f64x2(2.0, f64::from_bits(0xfff0_0000_dead_beef)));
        writeln!(r, "madd f64x2 {:016x?}", bits64(f64x2_relaxed_madd(d, e, g))).unwrap();
        writeln!(r, "nmadd f64x2 {:016x?}", bits64(f64x2_relaxed_nmadd(d, e, g))).unwrap();
    }

    fn relaxed_simd(r: &mut String) {
        // Safe to call on wasm: a module using a feature the engine lacks is refused at load.
        relaxed(r)
    }

    /// Grows memory a page at a time until refused; prints the pages reached without allocating.
    fn memory() {
        let mut pages = core::arch::wasm32::memory_size(0);
        while core::arch::wasm32::memory_grow(0, 1) != usize::MAX {
            pages += 1;
        }
        let msg = format!("memory refused after {pages} pages\n");
        write(1, msg.as_bytes()).unwrap();
    }

    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        if depth % 1000 == 0 {
            let mut buf = [0u8; 32];
            let mut n = depth;
            let mut i = buf.len() - 1;
            buf[i] = b'\n';
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            write(1, &buf[i..]).unwrap();
        }
        let mut pad = [depth; 8];
        black_box(&mut pad);
        black_box(recurse(black_box(depth + 1))) + pad[3]
    }
}
