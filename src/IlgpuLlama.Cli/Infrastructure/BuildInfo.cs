using System.Reflection;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>What was built: the git commit the build came from (Directory.Build.props stamps it into the informational version).</summary>
public static class BuildInfo
{
    /// <summary>The commit (with "-dirty" for uncommitted changes), or "unknown" when the build had no git.</summary>
    public static string Commit { get; } = Read();

    static string Read()
    {
        string? version = typeof(BuildInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        int plus = version?.IndexOf('+') ?? -1;
        return plus >= 0 && plus + 1 < version!.Length ? version[(plus + 1)..] : "unknown";
    }
}
