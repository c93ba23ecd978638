namespace IlgpuLlama.Cli.Bench;

/// <summary>Published peak DRAM bandwidth and fp32 throughput of a GPU.</summary>
/// <param name="Name">what matched</param>
/// <param name="BandwidthGBs">peak memory bandwidth (GB/s, 10^9 bytes)</param>
/// <param name="Fp32Gflops">peak fp32 (non-tensor) GFLOP/s, or null when not known</param>
public sealed record DeviceSpec(string Name, double BandwidthGBs, double? Fp32Gflops);

/// <summary>Spec sheet numbers looked up by the device name CUDA reports.</summary>
public static class DeviceSpecs
{
    /// <summary>The spec for a device name, or null ("unknown").</summary>
    /// <param name="name">e.g. "Tesla P100-PCIE-16GB", "NVIDIA H100 80GB HBM3"</param>
    /// <param name="memoryBytes">device memory, to tell A100 40 GB from 80 GB</param>
    public static DeviceSpec? Lookup(string name, long memoryBytes)
    {
        string n = name.ToUpperInvariant();
        if (n.Contains("P100"))
            return new("Tesla P100", 732, 9300);
        if (n.Contains("V100"))
            return new("Tesla V100", 900, 15700);
        if (n.Contains("A100"))
            return memoryBytes > 60L * 1024 * 1024 * 1024 ? new("A100 80GB", 2039, 19500) : new("A100 40GB", 1555, 19500);
        if (n.Contains("H200"))
            return new("H200", 4800, 67000);
        if (n.Contains("H100") && !n.Contains("PCIE") && !n.Contains("NVL"))
            return new("H100 SXM", 3350, 67000);
        return null;
    }
}
