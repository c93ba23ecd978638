using System.CommandLine;
using IlgpuLlama.Device;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>Options shared by several commands, created by factory methods so each command owns its instance.</summary>
public static class CliOptions
{
    /// <summary>--verbose: stack traces on errors (global).</summary>
    public static Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Show stack traces on errors (same as ILGPU_LLAMA_DEBUG=1)",
        Recursive = true,
    };

    /// <summary>--device auto|cuda|cpu, parsed with <see cref="ComputeDevice.ParseKind"/>.</summary>
    public static Option<DeviceKind> Device()
    {
        var option = new Option<DeviceKind>("--device")
        {
            Description = "Accelerator: auto (CUDA if present, else CPU), cuda, or cpu",
            HelpName = "auto|cuda|cpu",
            DefaultValueFactory = _ => DeviceKind.Auto,
            CustomParser = result =>
            {
                string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "auto";
                try
                {
                    return ComputeDevice.ParseKind(text);
                }
                catch (ArgumentException e)
                {
                    result.AddError(e.Message);
                    return DeviceKind.Auto;
                }
            },
        };
        option.CompletionSources.Add("auto", "cuda", "cpu");
        return option;
    }

    /// <summary>--json: machine-readable output on stdout.</summary>
    public static Option<bool> Json() => new("--json") { Description = "Write machine-readable JSON to stdout" };
}
