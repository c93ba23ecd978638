namespace IlgpuLlama;

/// <summary>
/// The 16-bit element type that weights are stored in on the device. Kernels are
/// specialised per type, so the loader converts every checkpoint dtype into one of these.
/// </summary>
public enum DeviceWeightType
{
    /// <summary>IEEE 754 binary16: more mantissa, but overflows above 65504.</summary>
    F16,

    /// <summary>bfloat16: the float32 range with a 7-bit mantissa; what Llama 3 ships in.</summary>
    BF16,
}
