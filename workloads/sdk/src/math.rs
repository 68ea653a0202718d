//! Math functions that give the same bits natively and on wasm32.
//!
//! `f64::exp` and friends call the platform's libm natively (glibc on the edge runtime's
//! hosts) but a Rust port of musl's on wasm32, and the two differ in the last bit now and then.
//! A workload that uses these instead emits exactly the same bytes in both, which keeps the
//! edge runtime's native baseline and its tests comparing like with like.

/// `e^x`, within 1 ulp: musl's `exp` (from FreeBSD's `e_exp.c`), the same algorithm as the
/// wasm32 standard library's.
pub fn exp(x: f64) -> f64 {
    // Shortest decimals of musl's constants (bit patterns in the comments).
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // 0x3fe62e42_fee00000
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // 0x3dea39ef_35793c76
    const INV_LN2: f64 = std::f64::consts::LOG2_E; // 0x3ff71547_652b82fe
    const P1: f64 = 0.166_666_666_666_666_02; // 0x3fc55555_5555553e
    const P2: f64 = -0.002_777_777_777_701_559_3; // 0xbf66c16c_16bebd93
    const P3: f64 = 6.613_756_321_437_934e-5; // 0x3f11566a_af25de2c
    const P4: f64 = -1.653_390_220_546_525_2e-6; // 0xbebbbd41_c5d26bf1
    const P5: f64 = 4.138_136_797_057_238_5e-8; // 0x3e663769_72bea4d0
    const OVERFLOW: f64 = 709.782_712_893_384; // ln(f64::MAX), 0x40862e42_fefa39ef
    const UNDERFLOW: f64 = -745.133_219_101_941_1; // 0xc0874910_d52d3051

    let high = (x.to_bits() >> 32) as u32;
    let negative = high >> 31 == 1;
    let high = high & 0x7fff_ffff; // of |x|

    if high >= 0x4086_232b {
        // |x| >= 708.39...
        if x.is_nan() {
            return x;
        }
        if x > OVERFLOW {
            return f64::INFINITY;
        }
        if x < UNDERFLOW {
            return 0.0;
        }
    }

    // Reduce: x = k ln2 + r, |r| <= ln2 / 2, with r = hi - lo for precision.
    let (k, hi, lo);
    if high > 0x3fd6_2e42 {
        // |x| > ln2 / 2
        k = if high >= 0x3ff0_a2b2 {
            // |x| >= 1.5 ln2: round half away from zero
            (INV_LN2 * x + if negative { -0.5 } else { 0.5 }) as i32
        } else if negative {
            -1
        } else {
            1
        };
        hi = x - f64::from(k) * LN2_HI; // exact: k ln2_hi has few significant bits
        lo = f64::from(k) * LN2_LO;
    } else if high > 0x3e30_0000 {
        // |x| > 2^-28
        k = 0;
        hi = x;
        lo = 0.0;
    } else {
        return 1.0 + x;
    }
    let r = hi - lo;

    // e^r by a rational approximation, then scale by 2^k.
    let rr = r * r;
    let c = r - rr * (P1 + rr * (P2 + rr * (P3 + rr * (P4 + rr * P5))));
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    if k == 0 {
        y
    } else {
        scalbn(y, k)
    }
}

/// `x * 2^n`, in steps where `2^n` alone would overflow or be subnormal (musl's `scalbn`).
fn scalbn(x: f64, mut n: i32) -> f64 {
    let mut y = x;
    if n > 1023 {
        y *= f64::from_bits(0x7fe0_0000_0000_0000); // 2^1023
        n -= 1023;
        if n > 1023 {
            y *= f64::from_bits(0x7fe0_0000_0000_0000);
            n = (n - 1023).min(1023);
        }
    } else if n < -1022 {
        // 2^-1022 * 2^53: keeps the final step out of the subnormal range, where it would
        // round twice.
        let step = f64::from_bits(0x0360_0000_0000_0000);
        y *= step;
        n += 1022 - 53;
        if n < -1022 {
            y *= step;
            n = (n + 1022 - 53).max(-1022);
        }
    }
    y * f64::from_bits(((0x3ff + n) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn within_an_ulp_of_the_platform() {
        let mut x = -750.0;
        while x < 750.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(ulps(got, want) <= 1, "exp({x}) = {got}, libm says {want}");
            x += 0.0137;
        }
        for x in [0.0, -0.0, 1e-300, -1e-300, 1e-9, 0.3465, 0.3466, 1.0397, 1.0398, 1.0, -1.0, 709.78, -708.4, -745.0] {
            assert!(ulps(exp(x), x.exp()) <= 1, "exp({x})");
        }
        // Not correctly rounded everywhere: e itself comes out an ulp high.
        assert_eq!(ulps(exp(1.0), std::f64::consts::E), 1);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn constants_are_musls() {
        let bits = [
            (0.693_147_180_369_123_8, 0x3fe6_2e42_fee0_0000u64),
            (std::f64::consts::LOG2_E, 0x3ff7_1547_652b_82fe),
            (-0.002_777_777_777_701_559_3, 0xbf66_c16c_16be_bd93),
            (4.138_136_797_057_238_5e-8, 0x3e66_3769_72be_a4d0),
            (-745.133_219_101_941_1, 0xc087_4910_d52d_3051),
        ];
        for (value, bits) in bits {
            assert_eq!(f64::to_bits(value), bits, "{value}");
        }
    }

    #[test]
    fn special_values() {
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(-746.0), 0.0);
        // Subnormal results.
        assert!(exp(-740.0) > 0.0 && exp(-740.0) < f64::MIN_POSITIVE);
        assert_eq!(scalbn(1.0, 2000), f64::INFINITY);
        assert_eq!(scalbn(1.0, 1023), f64::from_bits(0x7fe0_0000_0000_0000));
        assert_eq!(scalbn(f64::MAX, -2000), f64::MAX / 2f64.powi(1000) / 2f64.powi(1000));
        assert_eq!(scalbn(1.0, -1074), f64::from_bits(1));
        assert_eq!(scalbn(1.0, -1075), 0.0); // halfway, to even
    }
}
