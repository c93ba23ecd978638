using System.CommandLine;
using System.Reflection;
using IlgpuLlama.Device;
using IlgpuLlama.Gguf;
using IlgpuLlama.Model;
using IlgpuLlama.Safetensors;
using IlgpuLlama.Text;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// Parses and invokes a command tree with the CLI's conventions:
/// a usage error (unknown option, bad value) prints System.CommandLine's message as one line
/// <c>error: message</c> to stderr, no help, and exits 2 (<c>--help</c> prints the help, exit 0); an
/// expected failure prints one line <c>error: message</c> to stderr and exits 1 (the stack trace only with <c>--verbose</c> or ILGPU_LLAMA_DEBUG=1); anything else is
/// a bug and is printed in full, exit 1.
/// </summary>
public static class CliRunner
{
    /// <summary>Exit code of a usage error.</summary>
    public const int UsageError = 2;

    /// <summary>Exit code of a failure.</summary>
    public const int Failure = 1;

    /// <summary>Exception types that are expected failures (bad input, missing files, no device, ...).</summary>
    /// <remarks>I/O exceptions are the user's environment (a full disk, a permission, a missing file): their
    /// messages name the path, and the places that can say more (the output-file policy, the readers) do.</remarks>
    public static bool IsExpected(Exception e) => e is ArgumentException
        or ModelConfigException
        or SafetensorsException
        or GgufException
        or TokenizerException
        or DeviceOutOfMemoryException
        or IEngineMessage
        or InvalidOperationException
        or IOException
        or InvalidDataException
        or UnauthorizedAccessException
        // A temporary refused while the process ends after SIGTERM/SIGHUP (TemporaryPaths): not a bug.
        or OperationCanceledException;

    /// <summary>True when stack traces should be shown.</summary>
    public static bool DebugFromEnvironment => Environment.GetEnvironmentVariable("ILGPU_LLAMA_DEBUG") is "1" or "true";

    /// <summary>Parses <paramref name="args"/> against <paramref name="root"/> and runs the chosen command.</summary>
    public static int Run(RootCommand root, string[] args, TextWriter output, TextWriter error)
    {
        // Remembers whether a progress bar left its line open, so an error never follows it on the same line.
        var tracked = error as LineTrackingWriter ?? new LineTrackingWriter(error);
        error = tracked;
        // A llama.cpp flag this engine has no equivalent for: one line saying what to use instead
        // (checked before parsing: "-ngl" would otherwise parse as "-n gl").
        for (int i = 0; i < args.Length; i++)
        {
            bool isValue = i > 0 && TextOptions.Contains(args[i - 1]);
            if (!isValue && CliOptions.LlamaCppInstead.TryGetValue(args[i], out var instead))
            {
                error.WriteLine($"error: {args[i]} is a llama.cpp flag this engine does not have: {instead}");
                error.Flush();
                return UsageError;
            }
        }
        ParseResult parse;
        try
        {
            parse = root.Parse(args);
        }
        catch (Exception e)
        {
            // A parser or validator that throws is a bug, but the user still gets a usage error, not a crash.
            error.WriteLine($"error: {OneLine(Unwrap(e).Message)}");
            return UsageError;
        }
        if (parse.Errors.Count > 0 && args.Length == 0)
        {
            // A bare invocation asks what the program does: the help, on stderr, as a usage error.
            root.Parse(["--help"]).Invoke(new InvocationConfiguration { Output = error, Error = error });
            return UsageError;
        }
        if (parse.Errors.Count > 0)
        {
            // System.CommandLine's own error messages, on one line; the help only on --help.
            string command = string.Join(' ', CommandPath(parse.CommandResult.Command));
            var messages = parse.Errors.Select(e => Friendly(e.Message)).Distinct().ToList();
            if (messages.Count > 1)
                messages.Remove("Required command was not provided.");
            error.WriteLine($"error: {OneLine(string.Join("; ", messages))} (see '{command} --help')");
            error.Flush();
            return UsageError;
        }

        bool verbose = DebugFromEnvironment || parse.GetValue(CliOptions.Verbose);
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
        }
        catch (Exception raw)
        {
            var e = Unwrap(raw);
            tracked.EndPartialLine();
            if (IsExpected(e))
            {
                string message = e is UnauthorizedAccessException
                    ? $"{e.Message.TrimEnd('.')}; check the permissions or choose another path"
                    : CliNames.Message(e);
                error.WriteLine($"error: {OneLine(message)}");
                if (verbose)
                    error.WriteLine(e.ToString());
            }
            else
            {
                error.WriteLine($"internal error: {e.GetType().Name}: {OneLine(e.Message)}");
                error.WriteLine(e.ToString());
            }
            error.Flush();
            return Failure;
        }
    }

    static Exception Unwrap(Exception e)
    {
        while (true)
        {
            if (e is TargetInvocationException { InnerException: { } t })
                e = t;
            else if (e is AggregateException a && a.InnerExceptions.Count == 1)
                e = a.InnerExceptions[0];
            else
                return e;
        }
    }

    /// <summary>Longest error line printed; a longer message (a 2 MB JSON literal quoted by a parser) is cut in the middle.</summary>
    public const int MaxLineLength = 600;

    /// <summary><paramref name="message"/> on one line of at most <see cref="MaxLineLength"/> characters.</summary>
    public static string OneLine(string message)
    {
        string line = message.ReplaceLineEndings(" ").Trim();
        if (line.Length <= MaxLineLength)
            return line;
        int keep = (MaxLineLength - 40) / 2;
        return $"{line[..keep]} ...[{line.Length - 2 * keep:N0} characters cut]... {line[^keep..]}";
    }

    /// <summary>Options whose value is free text, which may look like a flag.</summary>
    static readonly HashSet<string> TextOptions = ["--prompt", "-p", "--text", "--system", "--stop"];

    /// <summary>
    /// System.CommandLine's error in users' words: no CLR type names, and a list of allowed values
    /// (tab-indented lines) on one line, comma-separated.
    /// </summary>
    static string Friendly(string message)
    {
        var m = System.Text.RegularExpressions.Regex.Match(message, @"^Cannot parse argument '(.*)' for option '([^']+)' as expected type '([^']+)'\.$", System.Text.RegularExpressions.RegexOptions.Singleline);
        if (!m.Success)
            return System.Text.RegularExpressions.Regex.Replace(message, @"\s*\n\t", " ").Replace("' '", "', '").Replace('\t', ' ');
        string type = m.Groups[3].Value.Replace("System.Nullable`1[", "").TrimEnd(']') switch
        {
            "System.UInt64" => "a whole number from 0 to 18446744073709551615",
            "System.Int64" or "System.Int32" => "a whole number",
            "System.Single" or "System.Double" => "a decimal number",
            "System.IO.FileInfo" => "a file path",
            "System.IO.DirectoryInfo" => "a directory path",
            var t => "a value of type " + t[(t.LastIndexOf('.') + 1)..],
        };
        return $"{m.Groups[2].Value} '{m.Groups[1].Value}' is not {type}";
    }

    static IEnumerable<string> CommandPath(Command command)
    {
        var names = new List<string>();
        for (var c = command; c is not null; c = c.Parents.OfType<Command>().FirstOrDefault())
            names.Add(c is RootCommand ? "ilgpu-llama" : c.Name);
        names.Reverse();
        return names;
    }
}
