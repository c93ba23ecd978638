using System.CommandLine;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace IlgpuLlama.Cli.Infrastructure;

/// <summary>
/// The writers of one invocation: results go to <see cref="Out"/> (stdout), statistics and
/// progress to <see cref="Err"/> (stderr). Tests pass their own writers through
/// <see cref="Program.Run(string[], TextWriter, TextWriter)"/>; System.CommandLine hands them to each action.
/// </summary>
public sealed class CommandIO
{
    CommandIO(TextWriter output, TextWriter error)
    {
        Out = output;
        Err = error;
    }

    /// <summary>Results.</summary>
    public TextWriter Out { get; }

    /// <summary>Statistics, progress, warnings.</summary>
    public TextWriter Err { get; }

    /// <summary>True when stderr is an interactive terminal (live progress is drawn only then).</summary>
    public bool ErrIsTerminal => ReferenceEquals(LineTrackingWriter.Unwrap(Err), System.Console.Error) && !System.Console.IsErrorRedirected;

    /// <summary>Ends a line a progress bar left open on stderr, so the next line (an error) starts on its own.</summary>
    public void EndPartialLine() => (Err as LineTrackingWriter)?.EndPartialLine();

    /// <summary>The writers of this invocation.</summary>
    public static CommandIO From(ParseResult parse) =>
        new(parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error) { Verbose = parse.GetValue(CliOptions.Verbose) };

    /// <summary>--verbose: stack traces on errors, and where a model's load time goes.</summary>
    public bool Verbose { get; init; }

    /// <summary>
    /// JSON with snake_case keys, indented; enums as snake_case names ("kv_cache", not 1), so a
    /// reader needs no table of numbers (saved files with numbers still read back).
    /// </summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>Serialises <paramref name="value"/> to stdout.</summary>
    public void WriteJson<T>(T value)
    {
        Out.WriteLine(JsonSerializer.Serialize(value, JsonOptions));
        Out.Flush();
    }

    /// <summary>A Spectre console over <paramref name="writer"/>: colours only on a real terminal.</summary>
    public static IAnsiConsole Console(TextWriter writer)
    {
        writer = LineTrackingWriter.Unwrap(writer);
        bool terminal = (ReferenceEquals(writer, System.Console.Out) && !System.Console.IsOutputRedirected)
            || (ReferenceEquals(writer, System.Console.Error) && !System.Console.IsErrorRedirected);
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (!terminal)
            console.Profile.Width = 160;
        return console;
    }
}
