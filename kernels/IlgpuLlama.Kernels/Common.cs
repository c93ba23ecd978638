using System.Runtime.InteropServices;

namespace IlgpuLlama.Kernels;

/// <summary>
/// Sixteen bytes: eight 16-bit weights, or four fp32 values reinterpreted. Loading a view of
/// these gives <c>ld.global.v4.b32</c> in PTX and <c>LDG.E.128</c> in sm_60 SASS.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
public struct U4
{
    public uint X, Y, Z, W;
}

/// <summary>Four fp32 values loaded with one 128-bit access.</summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
public struct F4
{
    public float X, Y, Z, W;
}

/// <summary>
/// How a 16-bit weight is widened to fp32 inside a kernel. Kernels are generic over this
/// struct so that each storage type gets its own specialised code with no runtime branch.
/// </summary>
public interface IWeightFormat
{
    /// <summary>The weight in the low 16 bits of a packed pair.</summary>
    float Low(uint pair);

    /// <summary>The weight in the high 16 bits of a packed pair.</summary>
    float High(uint pair);

    /// <summary>A single weight from its raw bits.</summary>
    float One(ushort bits);
}

/// <summary>IEEE binary16 weights: one <c>cvt.f32.f16</c> per weight.</summary>
public struct Fp16Format : IWeightFormat
{
    public readonly float Low(uint pair) => Interop.IntAsFloat((ushort)(pair & 0xFFFFu));
    public readonly float High(uint pair) => Interop.IntAsFloat((ushort)(pair >> 16));
    public readonly float One(ushort bits) => Interop.IntAsFloat(bits);
}

/// <summary>bfloat16 weights: the top half of an fp32, so widening is a shift or a mask.</summary>
public struct Bf16Format : IWeightFormat
{
    public readonly float Low(uint pair) => Interop.IntAsFloat(pair << 16);
    public readonly float High(uint pair) => Interop.IntAsFloat(pair & 0xFFFF0000u);
    public readonly float One(ushort bits) => Interop.IntAsFloat((uint)bits << 16);
}

/// <summary>Small device-side helpers shared by the kernel families.</summary>
public static class DeviceMath
{
    /// <summary>Sum over the warp; every lane receives the total.</summary>
    public static float WarpSum(float value)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value += Warp.ShuffleXor(value, offset);
        return value;
    }

    /// <summary>Max over the warp; every lane receives the result.</summary>
    public static float WarpMax(float value)
    {
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
            value = XMath.Max(value, Warp.ShuffleXor(value, offset));
        return value;
    }

    /// <summary>
    /// Rounds an fp32 value to binary16 bits, round to nearest even, in integer arithmetic. Done in
    /// software rather than with a Half cast because ILGPU's CPU accelerator truncates in that
    /// cast while CUDA rounds; this way both back ends write bit-identical KV caches. It runs only
    /// for the K/V values appended each step, so its cost does not matter.
    /// </summary>
    public static ushort ToHalfBits(float value)
    {
        uint f = Interop.FloatAsInt(value);
        uint sign = (f >> 16) & 0x8000u;
        uint abs = f & 0x7FFFFFFFu;
        if (abs >= 0x7F800000u)
            return (ushort)(sign | 0x7C00u | (abs > 0x7F800000u ? 0x0200u : 0u)); // inf, NaN
        if (abs >= 0x477FF000u)
            return (ushort)(sign | 0x7C00u); // rounds past 65504: overflow to inf
        if (abs < 0x38800000u)
        {
            // Below the smallest normal half: adding 0.5 puts the value's bits at the half's
            // subnormal scale (ulp of 0.5 in fp32 is 2^-24), and the fp32 add rounds to nearest even.
            float shifted = Interop.IntAsFloat(abs) + 0.5f;
            return (ushort)(sign | (Interop.FloatAsInt(shifted) - 0x3F000000u));
        }
        uint odd = (abs >> 13) & 1u;
        abs += 0xC8000FFFu + odd; // rebias exponent 127 -> 15, add rounding bias (ties to even)
        return (ushort)(sign | (abs >> 13));
    }

    /// <summary>SiLU in fp32: x * sigmoid(x).</summary>
    public static float Silu(float x) => x / (1.0f + XMath.Exp(-x));
}
