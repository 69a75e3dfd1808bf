"""UNETR++ segmentation in 3D Slicer: the module's panel, a thin logic and a self-test.

Everything that needs no Qt lives in ``UNETRPPSegmentLib`` (background process, MRML import, review)
and in the ``unetrpp`` core (the model itself runs in a separate PythonSlicer process), so this file
only connects the panel to them. No model math here.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from unetrpp.events import WarningEvent
from UNETRPPSegmentLib import compatibility, dependencies, sample_data, terminology
from UNETRPPSegmentLib.logic import (
    Device,
    JobStatus,
    Progress,
    SegmentationJob,
    SegmentationLogic,
    SegmentationRequest,
    modality_warning,
)
from UNETRPPSegmentLib.process import RunState
from UNETRPPSegmentLib.qt_timer import PollTimer

try:
    from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
except ImportError:  # Slicer < 5.2: the panel works, its state is just not saved with the scene
    parameterNodeWrapper = None

SETTINGS_TIMING_KEY = "UNETRPPSegment/LastRunSeconds"


#
# Module
#


class UNETRPPSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "UNETR++ Segment"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["UNETRPP developers"]
        self.parent.helpText = (
            "Fully automatic segmentation of CT and MRI with UNETR++ (abdominal organs, heart, lung tumour, "
            "brain tumour). The model runs in the background: Slicer stays responsive, the progress bar "
            "shows real progress and Segment turns into Cancel. The result is a new, editable segmentation "
            "with standard (SNOMED CT) terminology; existing segmentations are only replaced after you "
            "confirm. "
            "See <a href='https://github.com/unetrpp/SlicerUNETRPP'>the extension's home page</a>."
        )
        self.parent.acknowledgementText = (
            "UNETR++: Shaker et al., 'UNETR++: Delving into Efficient and Accurate 3D Medical Image "
            "Segmentation', IEEE TMI 2024. Model weights are the authors'; see each model's licence."
        )
        # The segments name this module's own terminology context; load its .term.json once all
        # modules (Terminologies included) are set up. Signal: qSlicerApplication::startupCompleted()
        # (Base/QTGUI/qSlicerApplication.h, Slicer v5.12.3); loader: vtkSlicerTerminologiesModuleLogic::
        # LoadTerminologyFromFile (Modules/Loadable/Terminologies/Logic/
        # vtkSlicerTerminologiesModuleLogic.h, v5.12.3). The loader logs instead of raising.
        slicer.app.startupCompleted.connect(lambda: terminology.load_terminology())
        # Offer the demo model's phantom in Sample Data (category UNETR++) from this module's own files,
        # registered on startupCompleted as Slicer's scripted module template does
        # (Utilities/Templates/Modules/Scripted/TemplateKey.py line 50, v5.10.0 and v5.12.3). It logs
        # instead of raising.
        slicer.app.startupCompleted.connect(lambda: sample_data.register_sample_data())


#
# Parameter node
#

if parameterNodeWrapper is not None:

    @parameterNodeWrapper
    class UNETRPPSegmentParameterNode:
        inputVolume1: slicer.vtkMRMLScalarVolumeNode
        inputVolume2: slicer.vtkMRMLScalarVolumeNode
        inputVolume3: slicer.vtkMRMLScalarVolumeNode
        inputVolume4: slicer.vtkMRMLScalarVolumeNode
        outputSegmentation: slicer.vtkMRMLSegmentationNode
        model: str = "synapse"
        forceCpu: bool = False
        # A slider needs a bounded float: Slicer's slider connector refuses a bare float, and then
        # connectGui fails for every parameter (parameterNodeWrapper/guiConnectors.py, Slicer v5.12.3
        # line 380; v5.6.2 line 319). The bounds are the .ui slider's.
        overlap: Annotated[float, WithinRange(0.0, 0.9)] = 0.5
        useTta: bool = False
        paperQuality: bool = False  # `unetrpp segment --quality paper`: fixes the overlap and the mirroring


#
# Widget
#


class UNETRPPSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cards = []
        self._job = None
        self._coreRunner = None
        self._timer = None
        self._dependencies = dependencies.DependencyGate()
        self._sceneGeneration = 0

    # ---- set-up ------------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/UNETRPPSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.progressBar.hide()
        self.ui.logTextEdit.maximumBlockCount = 2000  # a long run's log must not grow without bound
        # slicer.app.majorVersion/minorVersion: Q_PROPERTYs of qSlicerCoreApplication
        # (Base/QTCore/qSlicerCoreApplication.h, Slicer v5.6.2 and v5.12.3).
        unsupported = compatibility.unsupported_reason((slicer.app.majorVersion, slicer.app.minorVersion))
        if unsupported:  # one line in the panel instead of a traceback from the child later
            self.ui.statusLabel.text = unsupported
            for name in ("inputsCollapsibleButton", "advancedCollapsibleButton", "outputsCollapsibleButton"):
                getattr(self.ui, name).enabled = False
            self.ui.segmentButton.enabled = False
            return
        self.logic = UNETRPPSegmentLogic()

        self.ui.reviewTable.horizontalHeader().setStretchLastSection(True)
        self._populateModels()

        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onDeviceChanged)
        self.ui.installOpenVINOButton.clicked.connect(self.onInstallOpenVINO)
        self._updateCpuBackend()
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.importWeightsButton.clicked.connect(self.onImportWeights)
        self.ui.show3DButton.clicked.connect(self.onShow3D)
        self.ui.openEditorButton.clicked.connect(self.onOpenSegmentEditor)
        self.ui.reviewTable.cellClicked.connect(self.onReviewCellClicked)
        self.ui.paperQualityCheckBox.toggled.connect(self.updateGUI)
        for index in range(1, 5):
            selector = getattr(self.ui, f"inputVolumeSelector{index}")
            selector.currentNodeChanged.connect(self.updateGUI)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # The panel is complete (inputs shown for the model, Segment enabled) before the parameter node
        # is bound, so a failure there costs only saving the settings with the scene.
        self.onModelChanged()
        self._bindParameterNode()

    def _bindParameterNode(self):
        try:
            self.initializeParameterNode()
        except Exception as error:  # never leave the panel half built
            logging.exception("UNETR++ Segment: could not bind the parameter node")
            self._parameterNode = None
            self.ui.statusLabel.text = f"Settings are not saved with the scene ({error})."
            self.updateGUI()

    def cleanup(self):
        if self.logic is None:  # unsupported Slicer: nothing was set up
            return
        if self._job is not None:
            self._job.cancel()
        if self._coreRunner is not None:
            self._coreRunner.cancel()
        self.removeObservers()
        self._disconnectParameterNode()

    def enter(self):
        if self.logic is not None:
            self._bindParameterNode()

    def exit(self):
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event):
        if self._job is not None:
            self._job.cancel()
        self._job = None
        self._sceneGeneration += 1  # a weights download still running must not segment the next scene
        self.ui.reviewTable.setRowCount(0)
        self.ui.show3DButton.enabled = False
        self.ui.openEditorButton.enabled = False
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self._bindParameterNode()

    # ---- parameter node ----------------------------------------------------------------------------
    def initializeParameterNode(self):
        if parameterNodeWrapper is None:
            return
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume1:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume1 = firstVolume

    def _disconnectParameterNode(self):
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def setParameterNode(self, inputParameterNode):
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode is not None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._selectModel(self._parameterNode.model)
            self.ui.deviceComboBox.setCurrentIndex(1 if self._parameterNode.forceCpu else 0)
        self.updateGUI()

    # ---- models ------------------------------------------------------------------------------------
    def _populateModels(self):
        from unetrpp.models.registry import list_cards

        self._cards = list(list_cards())
        self.ui.modelComboBox.clear()
        for card in self._cards:
            self.ui.modelComboBox.addItem(card.title, card.name)
        self._updateModelTooltips()

    def _updateModelTooltips(self):
        for index, card in enumerate(self._cards):
            self.ui.modelComboBox.setItemData(index, self._modelTooltip(card), qt.Qt.ToolTipRole)

    def _modelTooltip(self, card) -> str:
        structures = ", ".join(name for _, name in card.labels)
        lines = [
            f"<b>{card.title}</b>",
            f"Inputs: {', '.join(card.input_channels)} ({card.modality})",
            f"Structures: {structures}",
            f"Weights: {'installed' if self.logic.weightsInstalled(card.name) else 'not installed yet'}",
        ]
        timings = [
            text for text in (self._lastRunText(card.name, device) for device in ("cpu", "gpu")) if text
        ]
        if timings:
            lines.append("Time on this computer: " + "; ".join(timings))
        else:
            lines.append("Time: shown here after the first run on this computer (CPU and GPU separately).")
        if card.paper_accuracy:
            lines.append(f"Paper: {card.paper_accuracy}")
        return "<br>".join(line for line in lines if line)

    def _lastRunText(self, model: str, device: str) -> str:
        seconds = qt.QSettings().value(f"{SETTINGS_TIMING_KEY}/{model}/{device}")
        return f"{device.upper()} {float(seconds) / 60:.1f} min (last run)" if seconds else ""

    def _currentCard(self):
        index = self.ui.modelComboBox.currentIndex
        return self._cards[index] if 0 <= index < len(self._cards) else None

    def _selectModel(self, name: str):
        for index, card in enumerate(self._cards):
            if card.name == name:
                self.ui.modelComboBox.setCurrentIndex(index)
                return

    def onModelChanged(self, _index=None):
        card = self._currentCard()
        if card is None:
            return
        if self._parameterNode is not None:
            self._parameterNode.model = card.name
        for index in range(1, 5):
            visible = index <= card.num_inputs
            getattr(self.ui, f"inputVolumeSelector{index}").setVisible(visible)
            getattr(self.ui, f"inputVolumeLabel{index}").setVisible(visible)
            if visible:
                channel = card.input_channels[index - 1]
                getattr(self.ui, f"inputVolumeLabel{index}").text = f"{channel}:"
        self._updateWeightsStatus()
        self.updateGUI()

    def onDeviceChanged(self, index):
        if self._parameterNode is not None:
            self._parameterNode.forceCpu = index == 1
        self._updateCpuBackend()

    def _updateWeightsStatus(self):
        card = self._currentCard()
        if card is None:
            return
        installed = self.logic.weightsInstalled(card.name)
        if installed:
            self.ui.weightsStatusLabel.text = "installed"
        else:
            size = next((w.size_bytes for w in card.weights if w.size_bytes), None)
            sizeText = f" ({size / 1e6:.0f} MB)" if size else ""
            self.ui.weightsStatusLabel.text = f"not installed: downloaded on first use{sizeText}"
        self._updateModelTooltips()

    # ---- GUI state ---------------------------------------------------------------------------------
    def _isBusy(self) -> bool:
        jobRunning = self._job is not None and self._job.status is JobStatus.RUNNING
        return jobRunning or (self._coreRunner is not None and self._coreRunner.state.is_active)

    def updateGUI(self, _caller=None, _event=None):
        busy = self._isBusy()
        card = self._currentCard()
        inputsReady = card is not None and all(
            getattr(self.ui, f"inputVolumeSelector{index}").currentNode() is not None
            for index in range(1, card.num_inputs + 1)
        )
        self.ui.segmentButton.text = "Cancel" if busy else "Segment"
        self.ui.segmentButton.enabled = busy or inputsReady
        self.ui.segmentButton.toolTip = (
            "Stop the running segmentation." if busy else "Segment the input volume(s) in the background."
        )
        for name in ("inputsCollapsibleButton", "advancedCollapsibleButton", "outputsCollapsibleButton"):
            getattr(self.ui, name).enabled = not busy
        paper = bool(self.ui.paperQualityCheckBox.checked)  # the preset decides these two itself
        self.ui.overlapSliderWidget.enabled = not paper
        self.ui.ttaCheckBox.enabled = not paper

    # ---- run ---------------------------------------------------------------------------------------
    def onSegmentButton(self):
        if self._isBusy():
            self._cancel()
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            if not self._ensureDependencies():
                return
            card = self._currentCard()
            forceModality = False
            warning = modality_warning(self._inputVolumes(card), card)
            if warning:  # before any download or run: a CT model on an MR gives a meaningless table
                if not slicer.util.confirmOkCancelDisplay(
                    f"{warning}.\n\nSegment anyway? OK runs the model on these volumes; Cancel stops here.",
                    windowTitle="UNETR++ Segment: wrong kind of scan?",
                ):
                    self.ui.statusLabel.text = "Not segmented: the input is not the model's kind of scan."
                    return
                forceModality = True  # the user saw it; the child is not to warn again
            if not self.logic.weightsInstalled(card.name):
                self._downloadWeightsThenSegment(card, forceModality)
                return
            self._startSegmentation(forceModality)

    def _inputVolumes(self, card) -> list:
        return [
            getattr(self.ui, f"inputVolumeSelector{index}").currentNode()
            for index in range(1, card.num_inputs + 1)
        ]

    def _requestFromGUI(self, forceModality: bool = False) -> SegmentationRequest:
        card = self._currentCard()
        volumes = self._inputVolumes(card)
        output = self.ui.outputSegmentationSelector.currentNode()
        replace = False
        if output is not None:
            replace = slicer.util.confirmYesNoDisplay(
                f"Replace all segments of '{output.GetName()}' with the new result?\n\n"
                "Your edits in it will be lost. Choose No to put the result in a new segmentation.",
                windowTitle="UNETR++ Segment",
            )
        return SegmentationRequest(
            input_volumes=volumes,
            model=card.name,
            device=Device.CPU if self.ui.deviceComboBox.currentIndex == 1 else Device.AUTO,
            overlap=float(self.ui.overlapSliderWidget.value),
            use_tta=bool(self.ui.ttaCheckBox.checked),
            quality="paper" if self.ui.paperQualityCheckBox.checked else "fast",
            output_segmentation=output if replace else None,
            replace_confirmed=replace,
            check_modality=not forceModality,
        )

    def _startSegmentation(self, forceModality: bool = False):
        request = self._requestFromGUI(forceModality)
        self.ui.logTextEdit.clear()
        self.ui.reviewTable.setRowCount(0)
        self.ui.show3DButton.enabled = False
        self.ui.openEditorButton.enabled = False
        self._showProgress(Progress("starting", 0.0, "Starting"))
        self._job = self.logic.segmentation.start(
            request,
            on_progress=self._showProgress,
            on_event=self._onChildEvent,
            on_log=self._appendLog,
            on_done=self._onJobDone,
        )
        self._timer = PollTimer(self._job.poll)
        self._timer.start()
        self.updateGUI()

    def _cancel(self):
        self.ui.statusLabel.text = "Cancelling..."
        slicer.app.processEvents()
        if self._job is not None and self._job.status is JobStatus.RUNNING:
            self._job.cancel()
        if self._coreRunner is not None and self._coreRunner.state.is_active:
            self._coreRunner.cancel()
            self.ui.progressBar.hide()
            self.ui.statusLabel.text = "Download cancelled."
        self.updateGUI()

    def _showProgress(self, progress: Progress):
        self.ui.progressBar.show()
        self.ui.progressBar.setValue(int(progress.percent))
        text = f"{progress.stage}: {progress.percent:.0f}%"
        if progress.eta_seconds is not None:
            text += f", about {_durationText(progress.eta_seconds)} left"
        self.ui.progressBar.setFormat(text)
        if progress.message:
            self.ui.statusLabel.text = progress.message

    def _appendLog(self, line: str):
        self.ui.logTextEdit.appendPlainText(line)

    def _onChildEvent(self, event):
        if isinstance(event, WarningEvent):  # the child's warnings are JSON events, not log lines
            self._appendLog(f"Warning: {event.message}")

    def _onJobDone(self, job: SegmentationJob):
        self.ui.progressBar.hide()
        if job.status is JobStatus.SUCCEEDED:
            on_cpu = dependencies.cpu_runs_the_network(
                cuda_available=self.logic.cudaLikelyAvailable(), force_cpu=job.request.device is Device.CPU
            )
            device = "cpu" if on_cpu else "gpu"
            qt.QSettings().setValue(
                f"{SETTINGS_TIMING_KEY}/{job.request.model}/{device}", job.elapsed_seconds
            )
            self._updateModelTooltips()
            self.ui.statusLabel.text = (
                f"Done in {_durationText(job.elapsed_seconds)}: '{job.segmentation_node.GetName()}'. "
                "Review the flagged structures below."
            )
            self._showReview(job)
        elif job.status is JobStatus.CANCELLED:  # by the user, or because an input was deleted
            reason = f"Stopped: {job.error_message}." if job.error_message else "Cancelled."
            self.ui.statusLabel.text = f"{reason} Nothing was changed."
        else:
            self.ui.statusLabel.text = f"Failed: {job.error_message}"
            slicer.util.errorDisplay(
                f"Segmentation failed: {job.error_message}",
                detailedText=self.ui.logTextEdit.toPlainText(),
                windowTitle="UNETR++ Segment",
            )
        self.updateGUI()

    # ---- weights -----------------------------------------------------------------------------------
    def _downloadWeightsThenSegment(self, card, forceModality: bool = False):
        size = next((w.size_bytes for w in card.weights if w.size_bytes), None)
        sizeText = f" (about {size / 1e6:.0f} MB)" if size else ""
        if not slicer.util.confirmOkCancelDisplay(
            f"The weights of '{card.title}' are not installed yet. Download them now{sizeText}?\n\n"
            f"Licence: {card.licence or 'not stated by the authors'}\n\n"
            "They are checked after download and kept for later use. Without internet, use "
            "'Import weights file...' instead.",
            windowTitle="UNETR++ Segment",
        ):
            return
        generation = self._sceneGeneration

        def segmentIfSameScene():
            if generation != self._sceneGeneration:  # the scene was closed meanwhile: keep the weights only
                self.ui.statusLabel.text = "Weights installed. Select the input again and click Segment."
                return
            self._startSegmentation(forceModality)

        download = ["download", card.name, "--progress", "json"]
        self._runCore(download, "Downloading weights", segmentIfSameScene)

    def onImportWeights(self):
        card = self._currentCard()
        with slicer.util.tryWithErrorDisplay("Failed to import the weights.", waitCursor=True):
            if not self._ensureDependencies():  # the import runs the core, which needs them
                return
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            f"Weights file for {card.title}",
            "",
            "Model files (*.model *.unetrpp *.pth *.pt);;All files (*)",
        )
        if not path:
            return
        arguments = ["models", "import", path, "--name", card.name]
        if self.logic.weightsInstalled(card.name):
            if not slicer.util.confirmOkCancelDisplay(
                f"Weights of '{card.title}' are installed already. Replace them with {Path(path).name}?",
                windowTitle="UNETR++ Segment",
            ):
                return
            arguments.append("--overwrite")
        self._runCore(arguments, "Importing weights", None)

    def _runCore(self, arguments, title: str, onSuccess):
        """Run a ``unetrpp`` subcommand in the background with the progress bar, then call onSuccess."""
        self.ui.logTextEdit.clear()
        self._showProgress(Progress("download", 0.0, f"{title}..."))

        def onEvent(event):
            fraction = getattr(event, "fraction", None)
            if fraction is not None:
                self._showProgress(Progress(event.stage, 100.0 * fraction, "", event.eta_seconds))

        self._coreRunner = self.logic.segmentation.run_core(
            arguments, on_event=onEvent, on_log=self._appendLog
        )

        def poll() -> bool:
            state = self._coreRunner.poll()
            if state.is_active:
                return True
            self.ui.progressBar.hide()
            self._updateWeightsStatus()
            if state is RunState.IMPORTING:  # exited 0
                self._coreRunner.finish()
                self.ui.statusLabel.text = f"{title}: done."
                if onSuccess is not None:
                    with slicer.util.tryWithErrorDisplay(
                        "Failed to start the segmentation.", waitCursor=True
                    ):
                        onSuccess()
            elif state is RunState.FAILED:
                self.ui.statusLabel.text = f"{title} failed: {self._coreRunner.error_message}"
                slicer.util.errorDisplay(
                    f"{title} failed: {self._coreRunner.error_message}\n\n"
                    "Offline? Download the file elsewhere and use 'Import weights file...'.",
                    detailedText=self.ui.logTextEdit.toPlainText(),
                )
            self.updateGUI()
            return False

        self._timer = PollTimer(poll)
        self._timer.start()
        self.updateGUI()

    # ---- review ------------------------------------------------------------------------------------
    def _showReview(self, job: SegmentationJob):
        table = self.ui.reviewTable
        table.setRowCount(len(job.review))
        for row, summary in enumerate(job.review):
            colorItem = qt.QTableWidgetItem()
            colorItem.setBackground(qt.QBrush(qt.QColor.fromRgbF(*summary.color_rgb)))
            colorItem.setData(qt.Qt.UserRole, summary.segment_id)
            table.setItem(row, 0, colorItem)
            table.setItem(row, 1, qt.QTableWidgetItem(summary.name))
            volumeItem = qt.QTableWidgetItem(f"{summary.volume_ml:.1f}")
            volumeItem.setTextAlignment(qt.Qt.AlignRight | qt.Qt.AlignVCenter)
            volumeItem.setToolTip(f"{summary.voxel_count} voxels")
            table.setItem(row, 2, volumeItem)
            table.setItem(row, 3, qt.QTableWidgetItem(", ".join(summary.flags)))
        table.resizeColumnsToContents()
        self.ui.show3DButton.enabled = True
        self.ui.show3DButton.text = "Show 3D"
        self.ui.openEditorButton.enabled = True

    def _selectInSegmentEditor(self, job, segmentId=None):
        """The result and its input volume selected in the Segment Editor, ready for editing."""
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(job.segmentation_node)
        sourceVolume = job.request.input_volumes[0]
        if hasattr(editor, "setSourceVolumeNode"):  # Slicer >= 5.3; "master" before
            editor.setSourceVolumeNode(sourceVolume)
        else:
            editor.setMasterVolumeNode(sourceVolume)
        if segmentId:
            editor.setCurrentSegmentID(segmentId)

    def onOpenSegmentEditor(self):
        job = self._job
        if job is None or job.segmentation_node is None:
            return
        selected = self.ui.reviewTable.currentRow()
        segmentId = self.ui.reviewTable.item(selected, 0).data(qt.Qt.UserRole) if selected >= 0 else None
        slicer.util.selectModule("SegmentEditor")
        self._selectInSegmentEditor(job, segmentId)

    def onReviewCellClicked(self, row, _column):
        job = self._job
        if job is None or job.segmentation_node is None:
            return
        segmentId = self.ui.reviewTable.item(row, 0).data(qt.Qt.UserRole)
        self._selectInSegmentEditor(job, segmentId)
        summary = job.review[row]
        if summary.centroid_ras is not None:
            worldPoint = [0.0, 0.0, 0.0]
            job.segmentation_node.TransformPointToWorld(summary.centroid_ras, worldPoint)
            slicer.modules.markups.logic().JumpSlicesToLocation(*worldPoint, True)

    def onShow3D(self):
        """Show the result in 3D, or hide it again (the surfaces cost memory on a large result)."""
        job = self._job
        if job is None or job.segmentation_node is None:
            return
        node = job.segmentation_node
        closedSurface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
        if node.GetSegmentation().ContainsRepresentation(closedSurface):
            node.RemoveClosedSurfaceRepresentation()
            self.ui.show3DButton.text = "Show 3D"
            return
        with slicer.util.tryWithErrorDisplay("Failed to build 3D surfaces.", waitCursor=True):
            node.CreateClosedSurfaceRepresentation()
            self.ui.show3DButton.text = "Hide 3D"
            layoutManager = slicer.app.layoutManager()
            if layoutManager is not None and layoutManager.threeDViewCount > 0:
                layoutManager.threeDWidget(0).threeDView().resetFocalPoint()

    # ---- dependencies ------------------------------------------------------------------------------
    def _ensureDependencies(self) -> bool:
        """True when the child's packages are importable; asks before installing, every time it is needed."""

        def confirmInstall(missing) -> bool:
            confirmed = slicer.util.confirmOkCancelDisplay(
                "UNETR++ needs Python packages that are not installed yet:\n\n"
                f"{', '.join(missing)}\n\n"
                "Install them now? This needs internet and can take several minutes (PyTorch alone can be "
                "a few GB). The PyTorch build and Slicer's own packages (numpy, SimpleITK) stay as they are.",
                windowTitle="UNETR++ Segment",
            )
            self.ui.statusLabel.text = (
                "Installing Python packages, please wait..."
                if confirmed
                else "Not started: the Python packages UNETR++ needs are not installed."
            )
            slicer.app.processEvents()
            return confirmed

        def confirmRestart(missing) -> bool:
            return slicer.util.confirmOkCancelDisplay(
                f"The packages were installed, but Slicer must restart before it can use them "
                f"({', '.join(missing)}). Restart Slicer now?",
                windowTitle="UNETR++ Segment",
            )

        ready = self._dependencies.ensure(confirmInstall, confirmRestart, slicer.util.restart)
        self._updateWeightsStatus()
        return ready

    # ---- the CPU backend ----------------------------------------------------------------------------
    def _updateCpuBackend(self):
        """Name what runs the network on the CPU; offer OpenVINO where the CPU runs and it is missing."""
        offer = dependencies.cpu_backend_offer(
            cuda_available=self.logic.cudaLikelyAvailable(),
            force_cpu=self.ui.deviceComboBox.currentIndex == 1,
            openvino_installed=dependencies.openvino_installed(),
        )
        self.ui.cpuBackendLabel.text = offer.backend
        self.ui.installOpenVINOButton.setVisible(offer.offer_install)

    def onInstallOpenVINO(self):
        # confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs) and errorDisplay(text,
        # windowTitle=None, ...): Base/Python/slicer/util.py, Slicer v5.6.2 and v5.12.3.
        if not slicer.util.confirmOkCancelDisplay(
            "Install OpenVINO into Slicer's Python? On the CPU it runs the official models about 1.7x "
            "faster per tile than PyTorch, agreeing with the exact result as closely as PyTorch's fast path "
            "does. It needs internet; PyTorch, NumPy and SimpleITK stay as they are, and no restart is "
            "needed.",
            windowTitle="UNETR++ Segment",
        ):
            return
        self.ui.statusLabel.text = "Installing OpenVINO, please wait..."
        slicer.app.processEvents()
        failure = None
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            dependencies.install_openvino()
        except RuntimeError as error:  # one line; the module keeps running with PyTorch
            failure = str(error)
        finally:
            slicer.app.restoreOverrideCursor()
        self._updateCpuBackend()
        self.ui.statusLabel.text = failure or "OpenVINO installed: the next CPU run uses it."
        if failure:
            slicer.util.errorDisplay(failure, windowTitle="UNETR++ Segment")


def _durationText(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


#
# Logic
#


class UNETRPPSegmentLogic(ScriptedLoadableModuleLogic):
    """Thin wrapper: dependencies and weights here, everything else in ``SegmentationLogic``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        # A script's blocking process(waitForCompletion=True) keeps Slicer's window responsive.
        self.segmentation = SegmentationLogic(keep_alive=slicer.app.processEvents)

    def getParameterNode(self):
        return UNETRPPSegmentParameterNode(super().getParameterNode())

    def process(
        self,
        inputVolumes,
        model: str,
        outputSegmentation=None,
        replaceConfirmed: bool = False,
        forceCpu: bool = False,
        overlap: float = 0.5,
        useTta: bool = False,
        quality: str = "fast",
        createSurfaces: bool = False,
        waitForCompletion: bool = True,
        onProgress=None,
        onDone=None,
    ) -> SegmentationJob:
        """Segment ``inputVolumes`` (a node or a list of nodes) with ``model`` (name or file path).

        With ``waitForCompletion`` (scripts, tests) it returns when the result is loaded and raises
        ``SegmentationError`` with the child's one-line message on failure.
        """
        if not isinstance(inputVolumes, (list, tuple)):
            inputVolumes = [inputVolumes]
        request = SegmentationRequest(
            input_volumes=inputVolumes,
            model=model,
            device=Device.CPU if forceCpu else Device.AUTO,
            overlap=overlap,
            use_tta=useTta,
            quality=quality,
            output_segmentation=outputSegmentation,
            replace_confirmed=replaceConfirmed,
            create_surfaces=createSurfaces,
        )
        return self.segmentation.start(
            request, on_progress=onProgress, on_done=onDone, wait_for_completion=waitForCompletion
        )

    @staticmethod
    def missingDependencies() -> list:
        return dependencies.missing_imports()

    @staticmethod
    def installDependencies() -> None:
        dependencies.install()

    @staticmethod
    def weightsInstalled(model: str) -> bool:
        return dependencies.weights_installed(model)

    @staticmethod
    def cudaLikelyAvailable() -> bool:
        """Cheap check for the timing label, without importing torch into Slicer."""
        return os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" and (
            Path("/proc/driver/nvidia").exists() or os.name == "nt" and bool(os.environ.get("CUDA_PATH"))
        )


#
# Test
#


class UNETRPPSegmentTest(ScriptedLoadableModuleTest):
    """Runs the module's flow inside Slicer: what needs no Python packages first (importing a result onto
    a volume under a transform), then, where torch and the rest are installed, a synthetic oblique CT
    phantom segmented with the bundled demo model in a real background process.

    "Reload and Test" calls ``runTest`` directly, where ``skipTest`` would raise and count as a failure
    (ScriptedLoadableModule.py, Slicer v5.12.3), so what cannot run is reported, not skipped.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ImportKeepsTheVolumesGeometryUnderATransform()
        missing = UNETRPPSegmentLogic.missingDependencies()
        if missing:
            self.delayDisplay(
                "Not run: the segmentation tests need Python packages that are missing "
                f"({', '.join(missing)}). Install them from the module panel (Segment asks), then run the "
                "test again."
            )
            return
        if not UNETRPPSegmentLogic.weightsInstalled("demo"):
            self.delayDisplay("Not run: the bundled demo model (unetrpp/data/models/demo.unetrpp) is missing")
            return
        self.setUp()
        self.test_SegmentSyntheticVolume()
        self.setUp()
        self.test_FailingChildReportsOneLine()

    def test_ImportKeepsTheVolumesGeometryUnderATransform(self):
        """No torch needed: a .seg.nrrd written by Slicer on the volume's grid comes back under the volume's
        transform with the volume's own (untransformed) grid as reference geometry."""
        import vtk
        from UNETRPPSegmentLib.nodes import import_segmentation

        volume, transform = self._syntheticVolume()
        source = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "source")
        source.SetAndObserveTransformNodeID(transform.GetID())  # the file then holds the volume's own grid
        source.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = source.GetSegmentation().AddEmptySegment("organ", "organ")
        array = (slicer.util.arrayFromVolume(volume) > 45).astype("uint8")
        slicer.util.updateSegmentBinaryLabelmapFromArray(array, source, segmentId, volume)
        path = Path(tempfile.mkdtemp(prefix="UNETRPPTest-")) / "organ.seg.nrrd"
        self.assertTrue(slicer.util.saveNode(source, str(path)))
        slicer.mrmlScene.RemoveNode(source)

        node = import_segmentation(path, volume, "imported")
        self.assertEqual(node.GetTransformNodeID(), transform.GetID())
        geometry = node.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        )
        ijkToRas = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijkToRas)
        expected = [ijkToRas.GetElement(row, column) for row in range(4) for column in range(4)]
        values = [float(value) for value in geometry.split(";")[:16]]
        for value, wanted in zip(values, expected):
            self.assertAlmostEqual(value, wanted, places=4)
        segmentId = node.GetSegmentation().GetNthSegmentID(0)
        imported = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentId, volume)
        self.assertEqual(int((imported != array).sum()), 0)
        path.unlink()
        path.parent.rmdir()
        self.delayDisplay("Import geometry test passed")

    def _syntheticVolume(self):
        import numpy as np
        import vtk

        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "UNETRPP test CT")
        shape = (40, 96, 96)
        z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
        array = np.full(shape, -1000, dtype=np.int16)
        body = ((y - 48) / 40.0) ** 2 + ((x - 48) / 44.0) ** 2 < 1
        organ = ((y - 40) / 14.0) ** 2 + ((x - 30) / 16.0) ** 2 + ((z - 20) / 12.0) ** 2 < 1
        array[np.broadcast_to(body, shape)] = 30
        array[np.broadcast_to(organ, shape)] = 60
        slicer.util.updateVolumeFromArray(volume, array)
        matrix = vtk.vtkMatrix4x4()
        angle = math.radians(15)
        spacing = (1.5, 1.5, 3.0)
        rotation = [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
        for row in range(3):
            for column in range(3):
                matrix.SetElement(row, column, rotation[row][column] * spacing[column])
            matrix.SetElement(row, 3, (-70.0, -60.0, -50.0)[row])
        volume.SetIJKToRASMatrix(matrix)
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        shift = vtk.vtkMatrix4x4()
        shift.SetElement(0, 3, 12.0)
        transform.SetMatrixTransformToParent(shift)
        volume.SetAndObserveTransformNodeID(transform.GetID())
        return volume, transform

    def test_SegmentSyntheticVolume(self):
        logic = UNETRPPSegmentLogic()
        volume, transform = self._syntheticVolume()
        temp_root = Path(tempfile.mkdtemp(prefix="UNETRPPTest-"))
        logic.segmentation.temp_root = temp_root
        percents = []
        start = time.monotonic()
        job = logic.process(volume, "demo", forceCpu=True, onProgress=lambda p: percents.append(p.percent))
        self.delayDisplay(f"Segmented in {time.monotonic() - start:.1f} s")

        node = job.segmentation_node
        self.assertEqual(job.status, JobStatus.SUCCEEDED)
        self.assertIsNotNone(node)
        self.assertGreater(node.GetSegmentation().GetNumberOfSegments(), 0)
        self.assertEqual(node.GetTransformNodeID(), transform.GetID())
        self.assertIs(node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()), volume)
        self.assertEqual(percents, sorted(percents))
        self.assertEqual(percents[-1], 100.0)
        self.assertEqual(list(temp_root.iterdir()), [])
        firstSegment = node.GetSegmentation().GetNthSegment(0)
        self.assertTrue(firstSegment.GetTerminology())
        labelmap = slicer.util.arrayFromSegmentBinaryLabelmap(
            node, node.GetSegmentation().GetNthSegmentID(0), volume
        )
        self.assertEqual(labelmap.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertEqual(len(job.review), node.GetSegmentation().GetNumberOfSegments())
        self.delayDisplay("Segmentation test passed")

    def test_FailingChildReportsOneLine(self):
        from UNETRPPSegmentLib.logic import SegmentationError

        volume, _ = self._syntheticVolume()
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        with self.assertRaises(SegmentationError) as context:
            UNETRPPSegmentLogic().process(volume, "no-such-model", forceCpu=True)
        self.assertNotIn("\n", str(context.exception))
        self.assertIn("no-such-model", str(context.exception))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), before)
        self.delayDisplay("Failure test passed")
